"""Loading the base model and tokenizer for serving, and building the stdlib
`tiny_causal_lm` (random weights plus a byte-level tokenizer) for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from fmlang.backends.serve.config import ServeConfig
from fmlang.diagnostics import error
from fmlang.errors import StageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2, as LlamaConfig's defaults expect


def load_base(config: ServeConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model in eval mode on the configured device, and its tokenizer."""
    auto = AutoModelForSequenceClassification if config.task == "classify" else AutoModelForCausalLM
    options: dict[str, object] = {"revision": config.revision} if config.revision else {}
    head = _head_options(config, options) if config.task == "classify" else {}
    try:
        model = auto.from_pretrained(
            config.base_model, dtype=DTYPES[config.dtype], **options, **head
        )
    except (OSError, ValueError) as exc:
        raise StageError(
            error(
                "FM1006",
                f"cannot load the base model `{config.base_model}`: {exc}",
                help="give a local model folder (config.json and weights) or a hub id",
            )
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model, **options)
    except (OSError, ValueError, TypeError) as exc:
        raise StageError(
            error(
                "FM1007",
                f"no usable tokenizer beside the base model `{config.base_model}`: {exc}",
                help="save the tokenizer into the model folder with tokenizer.save_pretrained",
            )
        ) from exc
    _check_classes(config, model)
    torch.nn.Module.to(model, config.device)
    return model.eval(), tokenizer


def _head_options(config: ServeConfig, options: dict[str, object]) -> dict[str, object]:
    """A base checkpoint without a classification head (an encoder such as MiniLM) gets one
    sized to the configured classes; the adapters carry its trained weights. A checkpoint
    that has a head keeps it, and `_check_classes` compares it with the classes."""
    from transformers import AutoConfig

    try:
        base = AutoConfig.from_pretrained(config.base_model, **options)
    except (OSError, ValueError):
        return {}  # from_pretrained reports it (FM1006)
    if any(a.endswith("ForSequenceClassification") for a in base.architectures or ()):
        return {}
    names = dict(enumerate(config.classes))
    return {
        "num_labels": len(config.classes),
        "id2label": names,
        "label2id": {name: i for i, name in names.items()},
    }


def _check_classes(config: ServeConfig, model: PreTrainedModel) -> None:
    labels = int(getattr(model.config, "num_labels", 0))
    if config.task == "classify" and labels != len(config.classes):
        raise StageError(
            error(
                "FM1008",
                f"the configuration names {len(config.classes)} classes but the model's "
                f"classification head has {labels} outputs",
                help="list exactly the classes the model was trained on, in training order",
            )
        )


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A lossless byte-level tokenizer: three special tokens, then one token per byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: i + len(SPECIAL_TOKENS) for i, ch in enumerate(alphabet)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama_config() -> LlamaConfig:
    """Exactly stdlib `tiny_causal_lm`'s shape (LlamaConfig defaults otherwise)."""
    return LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=1000,
        max_position_embeddings=256,
    )


def build_tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised `tiny_causal_lm` and its tokenizer into `folder`."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config())
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder

"""The tiny causal LM with a byte-level tokenizer, and random LoRA adapters on it, for the
serving tests and benchmarks (no hub downloads: everything is initialised from a seed)."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from fmlang.backends.train.tiny import tiny_config

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2, as tiny_config's token ids say

TARGET_SETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("gate_proj", "up_proj", "down_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)


def random_lora_config(index: int, rank: int) -> LoraConfig:
    """A LoRA config whose targets, alpha and rslora vary with `index`."""
    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank if index % 2 else rank + 3,
        target_modules=list(TARGET_SETS[index % len(TARGET_SETS)]),
        use_rslora=index % 3 == 2,
        alpha_pattern={"v_proj": 5} if index % 4 == 1 else {},
        init_lora_weights=False,
        lora_dropout=0.0,
    )


def build_random_adapters(
    base: Path, out: Path, ranks: list[int], seed: int = 0
) -> dict[str, Path]:
    """Save one random adapter per rank (`a0`, `a1`, …) under `out`; returns name → folder."""
    folders: dict[str, Path] = {}
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(base)  # once: LoRA added, removed
    for index, rank in enumerate(ranks):
        torch.manual_seed(seed + 1000 * (index + 1))
        peft_model = get_peft_model(model, random_lora_config(index, rank))
        folder = out / f"a{index}"
        peft_model.save_pretrained(str(folder))
        folders[f"a{index}"] = folder
        model = peft_model.unload()
    return folders


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


def build_tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised `tiny_causal_lm` (its shape from `train.tiny`) with the
    lossless byte tokenizer, so tests can compare token ids exactly."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config())
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def llama_config(
    hidden: int = 512, layers: int = 8, heads: int = 8, intermediate: int = 1376, vocab: int = 32000
) -> LlamaConfig:
    """A Llama big enough that compute matters (the defaults: about 57M parameters), with
    the byte tokenizer's special token ids."""
    return LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_llama(folder: Path, config: LlamaConfig | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised Llama (`llama_config` by default) with the byte
    tokenizer (its token ids are the model's first 259)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config or llama_config())
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder

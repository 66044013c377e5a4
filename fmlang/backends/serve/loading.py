"""Loading the base model and tokenizer for serving."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fmlang.backends.serve.config import ServeConfig
from fmlang.diagnostics import error
from fmlang.errors import StageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_base(config: ServeConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model in eval mode on the configured device, and its tokenizer."""
    model, tokenizer, _ = load_base_and_heads(config)
    return model, tokenizer


def load_base_and_heads(
    config: ServeConfig,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, frozenset[str]]:
    """`load_base`, and the modules the checkpoint lacked (initialised at random: a
    classifier's head on an encoder checkpoint), which only adapters may supply."""
    auto = AutoModelForSequenceClassification if config.task == "classify" else AutoModelForCausalLM
    options: dict[str, Any] = {"revision": config.revision} if config.revision else {}
    head = _head_options(config, options) if config.task == "classify" else {}
    try:
        with _quiet_loading():
            loaded: Any = auto.from_pretrained(
                config.base_model,
                dtype=DTYPES[config.dtype],
                output_loading_info=True,
                **options,
                **head,
            )
        model, info = cast(tuple[PreTrainedModel, dict[str, Any]], loaded)
    except (OSError, ValueError) as exc:
        raise StageError(
            error(
                "FM1006",
                f"cannot load the base model `{config.base_model}`: {exc}",
                help="give a local model folder (config.json and weights) or a hub id",
            )
        ) from exc
    tokenizer = load_tokenizer(config)
    _check_classes(config, model)
    torch.nn.Module.to(model, config.device)
    missing = frozenset(str(key).rpartition(".")[0] for key in info.get("missing_keys", ()))
    torch.nn.Module.eval(model)
    return model, tokenizer, missing


def load_tokenizer(config: ServeConfig) -> PreTrainedTokenizerBase:
    """The tokenizer beside the base model (FM1007 when there is none)."""
    options: dict[str, Any] = {"revision": config.revision} if config.revision else {}
    try:
        return AutoTokenizer.from_pretrained(config.base_model, **options)
    except (OSError, ValueError, TypeError) as exc:
        raise StageError(
            error(
                "FM1007",
                f"no usable tokenizer beside the base model `{config.base_model}`: {exc}",
                help="save the tokenizer into the model folder with tokenizer.save_pretrained",
            )
        ) from exc


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' load report and "Loading weights" bar stay off the server's console:
    a classifier head that is "MISSING … newly initialized" is expected here (the adapters
    carry its trained weights, and `missing` below tells the server which modules they must
    supply), and errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _head_options(config: ServeConfig, options: dict[str, Any]) -> dict[str, Any]:
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

"""From a `ServeConfig` to a running engine: base model, adapter scan, LoRA bank, cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fmlang.backends.serve.adapters import scan_adapter
from fmlang.backends.serve.cache import AdapterCache
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import Engine
from fmlang.backends.serve.loading import load_base
from fmlang.backends.serve.lora import LoraBank


def build_engine(config: ServeConfig, on_batch: Callable[[int], None] | None = None) -> Engine:
    """Load everything the configuration names and return an engine (not yet started).
    Raises StageError (FM1003–FM1008) for an unusable model or adapter."""
    model, tokenizer = load_base(config)
    specs = {name: scan_adapter(name, Path(folder)) for name, folder in config.adapters.items()}
    bank = LoraBank(model, specs, slots=config.cache.device_slots)
    bank_device = next(model.parameters()).device
    for layer in [*bank.lora.values(), *bank.heads.values()]:
        layer.to(bank_device)
    cache = AdapterCache(specs, bank, host_slots=config.cache.host_slots)
    return Engine(
        model,
        tokenizer,
        cache,
        task=config.task,
        max_batch=config.max_batch,
        max_queue=config.max_queue,
        max_input_tokens=config.max_input_tokens,
        seed=config.seed,
        on_batch=on_batch,
    )

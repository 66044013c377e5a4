"""From a `ServeConfig` to a running engine: base model, adapter scan, LoRA bank, cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fmlang.backends.serve.adapters import AdapterSpec, scan_adapter
from fmlang.backends.serve.cache import AdapterCache
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import Engine
from fmlang.backends.serve.loading import load_base_and_heads
from fmlang.backends.serve.lora import LoraBank
from fmlang.diagnostics import error
from fmlang.errors import StageError


def build_engine(config: ServeConfig, on_batch: Callable[[int], None] | None = None) -> Engine:
    """Load everything the configuration names and return an engine (not yet started).
    Raises StageError (FM1003–FM1008) for an unusable model or adapter, FM1060/FM1061 for
    a classifier whose trained head neither the base checkpoint nor an adapter carries."""
    model, tokenizer, missing = load_base_and_heads(config)
    specs = {name: scan_adapter(name, Path(folder)) for name, folder in config.adapters.items()}
    untrained = _check_heads(config, missing, specs)
    bank = LoraBank(model, specs, slots=config.cache.device_slots)
    bank_device = next(model.parameters()).device
    for layer in [*bank.lora.values(), *bank.heads.values()]:
        layer.to(bank_device)
    cache = AdapterCache(specs, bank, host_slots=config.cache.host_slots)
    engine = Engine(
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
    engine.untrained_heads = untrained
    return engine


def _check_heads(
    config: ServeConfig, missing: frozenset[str], specs: dict[str, AdapterSpec]
) -> frozenset[str]:
    """A classifier's modules the base checkpoint lacks (randomly initialised at load) must
    come from every adapter (its `modules_to_save`): FM1060 for one that lacks them, FM1061
    when no adapter supplies them. The modules that only adapters supply."""
    if config.task != "classify" or not missing:
        return frozenset()
    for name, spec in sorted(specs.items()):
        lacking = sorted(missing - set(spec.heads))
        if lacking:
            raise StageError(
                error(
                    "FM1060",
                    f"adapter `{name}` ({spec.folder}) does not carry the trained "
                    f"{', '.join(f'`{m}`' for m in lacking)} that the base checkpoint "
                    f"`{config.base_model}` lacks, so it would classify with random weights",
                    help="retrain it for the classification task (its modules_to_save hold "
                    "the head), or remove it from the deployment",
                )
            )
    if not specs:
        raise StageError(
            error(
                "FM1061",
                f"the base checkpoint `{config.base_model}` has no trained "
                f"{', '.join(f'`{m}`' for m in sorted(missing))} and no adapter carries one, "
                "so nothing can classify",
                help="serve adapters trained for these classes, or a checkpoint with a "
                "trained classification head",
            )
        )
    return missing

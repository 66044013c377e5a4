"""Spec → verification problem: every resource constraint becomes a tracked assertion."""

from __future__ import annotations

import z3

from fmlang.ir.nodes import Constraint, Spec
from fmlang.verify import costmodel as cm
from fmlang.verify.knobs import QUANT_ORDER, Choice
from fmlang.verify.policy import encode_policies
from fmlang.verify.problem import Problem, real, tabulate
from fmlang.verify.resources import (
    Served,
    assert_bound,
    cost_term,
    latency_term,
    memory_on,
    served,
    throughput_term,
)
from fmlang.verify.spans import SpanIndex
from fmlang.verify.train_fit import encode_training

RESOURCE_KINDS = ("memory", "latency", "throughput", "cost")


def encode(spec: Spec, spans: SpanIndex) -> Problem:
    problem = Problem()
    targets: dict[str, Served | None] = {}
    for constraint in spec.constraints:
        if constraint.kind not in RESOURCE_KINDS:
            continue
        if constraint.target not in targets:
            targets[constraint.target] = served(problem, spans, spec, constraint.target)
        target = targets[constraint.target]
        if target is not None:
            _encode_resource(problem, spans, spec, target, constraint)
    for deployment in spec.deployments:
        for name in _served_names(spec, deployment.target):
            if name not in targets:
                targets[name] = served(problem, spans, spec, name)
            target = targets[name]
            if target is not None:
                _capacity(problem, spans, spec, target)
                cost_term(problem, spans, spec, target)
    for merge in spec.merges:  # merged ranks are compared even when nothing serves them
        if merge.name not in targets:
            targets[merge.name] = served(problem, spans, spec, merge.name)
    for model in spec.models:
        encode_training(problem, spans, spec, model)
    encode_policies(problem, spans, spec)
    _objectives(problem, [t for t in targets.values() if t is not None])
    return problem


def _served_names(spec: Spec, target: str) -> list[str]:
    """What a deployment of `target` may serve: the model or merge itself, or for a model
    that selects its base every candidate left (`fmc run` picks one after training, so the
    deployment's bounds must hold for each: the worst case)."""
    model = spec.model(target)
    if model is None or model.selection is None:
        return [target]
    return [m.name for m in spec.models if m.candidate_of == target]


def _encode_resource(
    problem: Problem, spans: SpanIndex, spec: Spec, s: Served, c: Constraint
) -> None:
    hw = spec.hardware_profile(c.on_hardware) if c.on_hardware else None
    key = f"{s.name}:{c.kind}:{c.metric}:{c.on_hardware}:{c.span.line if c.span else 0}"
    shown = c.bound.text if c.bound else ""
    if c.kind == "memory":
        estimate = memory_on(problem, s, hw)
        text = f"`{s.name}` must fit in {shown}" + (f" on {hw.name}" if hw else "")
        if hw is not None and hw.kind == "cpu":
            text += " with the `fmc serve` process"
    elif c.kind == "latency" and hw is not None:
        estimate = latency_term(problem, s, hw)
        text = f"`{s.name}` must answer within {shown} ({c.metric}) on {hw.name}"
    elif c.kind == "throughput" and hw is not None and c.bound is not None:
        tokens = c.bound.dimension == "token_rate"
        estimate = throughput_term(problem, spans, s, hw, tokens)
        text = f"`{s.name}` must serve at least {shown} on {hw.name}"
    elif c.kind == "cost" and c.bound is not None and c.bound.dimension == "money_rate":
        found = cost_term(problem, spans, spec, s)
        if found is None:
            return
        estimate, text = found, f"`{s.name}` may cost at most {shown}"
    else:
        return
    assert_bound(problem, key, estimate, c, text)


def _capacity(problem: Problem, spans: SpanIndex, spec: Spec, s: Served) -> None:
    """Each replica's per-device footprint fits one device's memory (a profile's devices
    are separate memories, never one pool; `tensor_parallel` splits a replica over them)."""
    assert s.deployment is not None
    for target in s.deployment.targets:
        hw = spec.hardware_profile(target.hardware) if target.hardware else None
        if hw is None or hw.memory is None:
            continue
        capacity = hw.memory.value
        span = spans.setting("deploy", s.deployed_as, f"{target.kind}.hardware")
        problem.track(
            f"{s.name}:capacity:{target.kind}",
            memory_on(problem, s, hw).term <= real(capacity),
            span,
            f"a `{s.name}` replica must fit in {hw.name}'s {capacity / cm.GIB:.1f} GiB"
            + (f" per device (tensor parallel {s.tp})" if s.tp > 1 else ""),
            constraint=True,
        )


def _objectives(problem: Problem, targets: list[Served]) -> None:
    """Lexicographic: cheapest first, then the largest adapter rank, the least lossy
    quantization, the largest serving batch, the most resident adapters, the longest input."""
    costs = [
        problem.estimates[f"{t.name}.cost"].term
        for t in targets
        if f"{t.name}.cost" in problem.estimates
    ]
    if costs:
        problem.objectives.append(("min", sum(costs[1:], costs[0])))
    pickers: tuple[tuple[str, str], ...] = (
        ("ranks", "max"), ("quant", "min"), ("batch", "max"), ("resident", "max"), ("seq", "max"),
    )  # fmt: skip
    for attribute, direction in pickers:
        vars_ = [c for t in targets for c in _knobs(t, attribute) if len(c.values) > 1]
        if vars_:
            problem.objectives.append((direction, _value_sum(vars_)))


def _knobs(target: Served, attribute: str) -> list[Choice]:
    found = getattr(target, attribute)
    return list(found) if isinstance(found, list) else [found]


def _value_sum(choices: list[Choice]) -> z3.ArithRef:
    """The objective term of some knobs: their values, or for quantization its rank in
    QUANT_ORDER, so `auto in [nf4, none]` still prefers `none`."""

    def score(value: int | str) -> float:
        return float(QUANT_ORDER.index(value)) if isinstance(value, str) else float(value)

    terms = [tabulate([choice], score) for choice in choices]
    return sum(terms[1:], terms[0])

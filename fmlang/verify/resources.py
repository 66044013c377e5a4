"""Memory, latency, throughput and cost: knobs, estimates and the bounds on them."""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.check.schema import QUANTIZATIONS
from fmlang.ir.nodes import Constraint, Deployment, Hardware, Model, PretrainedModel, Spec
from fmlang.verify import costmodel as cm
from fmlang.verify.knobs import PREQUANTIZED, QUANT_ORDER, Choice, domain
from fmlang.verify.problem import Estimate, Problem, real
from fmlang.verify.spans import SpanIndex

OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
       ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}  # fmt: skip


@dataclass
class Served:
    """What one constraint target (a model or a merge) serves, as solver choices."""

    name: str
    kind: str  # "model" or "merge"
    arch: cm.Arch
    base: PretrainedModel
    quant: Choice
    seq: Choice
    ranks: list[Choice]  # one per adapter (one for a model, one per source for a merge)
    adapter: str
    targets: tuple[str, ...]
    rank_rule: str  # how merged ranks combine: "same", "sum" or "max"
    batch: Choice
    resident: Choice
    deployment: Deployment | None
    virtual_tokens: int = 20
    feedforward: tuple[str, ...] = ()
    tp: int = 1  # devices one replica's weights are split over (tensor parallel)
    # What the deployment's own knobs (batch, resident adapters, replicas) are named after:
    # the deployed model. A selection candidate `m+c` is served as `m`, so its candidates
    # share one choice of each, which must hold for every one of them.
    deploy_key: str = ""

    @property
    def deployed_as(self) -> str:
        return self.deploy_key or self.name

    def rank_of(self, *ranks: int | str) -> int:
        values = [int(r) for r in ranks]
        return sum(values) if self.rank_rule == "sum" else max(values)

    def adapter_bytes(self, rank: int) -> float:
        params = cm.adapter_params(
            self.arch, self.adapter, rank, self.targets, self.virtual_tokens, self.feedforward
        )
        return params * cm.activation_bytes(self.arch)


DEFAULT_SERVING_SEQ = 4096  # budgeted when neither the model nor the deployment says


def model_choices(
    problem: Problem, spans: SpanIndex, model: Model, arch: cm.Arch, deployment: Deployment | None
) -> tuple[Choice, Choice, Choice]:
    name = model.name
    adapter = model.adapter
    quant_values, quant_auto = domain(model.quantize, "none")
    if quant_auto and model.quantize.choices is None:
        quant_values = QUANT_ORDER[:3]
    elif quant_auto and tuple(model.quantize.choices or ()) == QUANTIZATIONS:
        # a bare `auto` never picks a method that needs a pre-quantized checkpoint
        quant_values = tuple(v for v in quant_values if v not in PREQUANTIZED)
    quant = problem.choice(
        f"{name}.quantize",
        quant_values,
        _written(
            spans, "model", name, "quantize", model.quantize.auto or model.quantize.fixed != "none"
        ),
        quant_auto,
    )
    rank_values, rank_auto = domain(adapter.rank if adapter else None, 8, 1, 256)
    rank = problem.choice(
        f"{name}.rank",
        rank_values,
        _written(spans, "model", name, "adapter", adapter is not None and adapter.rank is not None),
        rank_auto,
    )
    deployed = deployment.max_seq if deployment and deployment.max_seq else None
    knob, where = (
        (deployed, ("deploy", deployment.name))
        if deployed and deployment
        else (model.max_seq, ("model", name))
    )
    default = min(arch.max_seq, DEFAULT_SERVING_SEQ)
    seq_values, seq_auto = domain(knob, default, 64, default)
    seq = problem.choice(
        f"{where[1]}.max_seq", seq_values, spans.setting(*where, "max_seq"), seq_auto
    )
    return quant, rank, seq


def _written(spans: SpanIndex, kind: str, name: str, path: str, present: bool):  # type: ignore[no-untyped-def]
    """The setting's span when the spec wrote it; defaults have no line to label."""
    return spans.setting(kind, name, path) if present else None


def served(problem: Problem, spans: SpanIndex, spec: Spec, target: str) -> Served | None:
    model, merge = spec.model(target), spec.merge(target)
    sources = [spec.model(m) for m in merge.models] if merge else [model]
    models = [m for m in sources if m is not None]
    if not models or models[0].base is None:
        return None
    base = spec.base_model(models[0].base)
    if base is None:
        return None
    arch = cm.Arch.of(base)
    deployed_as = model.candidate_of if model is not None and model.candidate_of else target
    deployment = next((d for d in spec.deployments if d.target == deployed_as), None)
    picked = [model_choices(problem, spans, m, arch, deployment) for m in models]
    batch, resident = _deploy_choices(problem, spans, deployment, deployed_as)
    adapter = models[0].adapter
    method = merge.method if merge else ""
    return Served(
        name=target, kind="merge" if merge else "model", arch=arch, base=base,
        quant=picked[0][0], seq=picked[0][2], ranks=[p[1] for p in picked],
        adapter=adapter.kind if adapter else "none", targets=adapter.targets if adapter else (),
        virtual_tokens=_virtual_tokens(adapter),
        feedforward=adapter.feedforward if adapter else (),
        rank_rule="sum" if method == "cat" else ("max" if merge else "same"),
        batch=batch, resident=resident, deployment=deployment,
        tp=(deployment.tensor_parallel or 1) if deployment else 1, deploy_key=deployed_as,
    )  # fmt: skip


def _virtual_tokens(adapter: object) -> int:
    knob = getattr(adapter, "virtual_tokens", None)
    fixed = getattr(knob, "fixed", None)
    return int(fixed) if isinstance(fixed, int | float) else 20


def _deploy_choices(
    problem: Problem, spans: SpanIndex, deployment: Deployment | None, target: str
) -> tuple[Choice, Choice]:
    knob_batch = deployment.batch if deployment else None
    knob_resident = deployment.max_adapters if deployment else None
    b_values, b_auto = domain(knob_batch, 1, 1, 256)
    r_values, r_auto = domain(knob_resident, 1, 1, 64)
    batch = problem.choice(
        f"{target}.serve_batch", b_values, spans.setting("deploy", target, "batch"), b_auto
    )
    resident = problem.choice(
        f"{target}.max_adapters", r_values, spans.setting("deploy", target, "max_adapters"), r_auto
    )
    return batch, resident


def memory_term(problem: Problem, s: Served) -> Estimate:
    """Per device: tensor parallelism splits the weights, adapters, KV cache and the
    activations' head- and feed-forward-wide tensors over `tp` devices."""

    def weights(quant: str) -> float:
        return cm.weight_bytes(s.arch, str(quant)) / s.tp

    def adapters(resident: int, *ranks: int) -> float:
        return int(resident) * s.adapter_bytes(s.rank_of(*ranks)) / s.tp

    def runtime(batch: int, seq: int) -> float:
        kv = cm.kv_cache_bytes(s.arch, int(batch), int(seq))
        return (kv + cm.inference_activation_bytes(s.arch, int(batch), int(seq))) / s.tp

    w = problem.estimate(f"{s.name}.memory.weights", [s.quant], weights, "bytes").term
    a = problem.estimate(
        f"{s.name}.memory.adapters", [s.resident, *s.ranks], adapters, "bytes"
    ).term
    r = problem.estimate(f"{s.name}.memory.runtime", [s.batch, s.seq], runtime, "bytes").term
    return problem.combine(f"{s.name}.memory", [w, a, r], "bytes")


def memory_on(problem: Problem, s: Served, hw: Hardware | None) -> Estimate:
    """What a replica holds on `hw`: on a CPU profile the host's memory also holds the
    `fmc serve` process itself (`cm.SERVE_PROCESS_BYTES`, measured); a GPU's memory holds
    only the model's tensors."""
    model = memory_term(problem, s)
    if hw is None or hw.kind != "cpu":
        return model
    process = problem.estimate(f"{s.name}.memory.process", [], lambda: cm.SERVE_PROCESS_BYTES,
                               "bytes")  # fmt: skip
    return problem.combine(f"{s.name}.memory@{hw.name}", [model.term, process.term], "bytes")


def latency_term(problem: Problem, s: Served, hw: Hardware) -> Estimate:
    def seconds(quant: str, batch: int, seq: int) -> float:
        return cm.request_seconds(s.arch, hw, str(quant), int(batch), int(seq), s.tp)

    key = f"{s.name}.latency@{hw.name}"
    return problem.estimate(key, [s.quant, s.batch, s.seq], seconds, "s")


def replicas_choice(problem: Problem, spans: SpanIndex, s: Served, hw_name: str) -> Choice | None:
    if s.deployment is None:
        return None
    for target in s.deployment.targets:
        if target.hardware == hw_name:
            values, auto = domain(target.replicas, 1, 1, 16, every=True)
            return problem.choice(
                f"{s.deployed_as}.{target.kind}.replicas",
                values,
                spans.setting("deploy", s.deployed_as, f"{target.kind}.replicas"),
                auto,
            )
    return None


def throughput_term(
    problem: Problem, spans: SpanIndex, s: Served, hw: Hardware, tokens: bool
) -> Estimate:
    replicas = replicas_choice(problem, spans, s, hw.name)
    picked = [s.quant, s.batch, s.seq] + ([replicas] if replicas else [])

    def rate(quant: str, batch: int, seq: int, count: int = 1) -> float:
        return cm.throughput(s.arch, hw, str(quant), int(batch), int(seq), int(count), tokens, s.tp)

    unit = "tok/s" if tokens else "req/s"
    return problem.estimate(f"{s.name}.throughput@{hw.name}.{unit}", picked, rate, unit)


def cost_term(problem: Problem, spans: SpanIndex, spec: Spec, s: Served) -> Estimate | None:
    if s.deployment is None:
        return None
    terms = []
    for target in s.deployment.targets:
        hw = spec.hardware_profile(target.hardware) if target.hardware else None
        replicas = replicas_choice(problem, spans, s, hw.name) if hw else None
        if hw is None or replicas is None:
            continue
        terms.append(
            problem.estimate(
                f"{s.name}.cost@{hw.name}",
                [replicas],
                lambda count, hw=hw: cm.cost_per_hour(hw, int(count)),
                "USD/h",
            ).term
        )
    return problem.combine(f"{s.name}.cost", terms, "USD/h") if terms else None


def bound_value(constraint: Constraint) -> float | None:
    return constraint.bound.value if constraint.bound is not None else None


def assert_bound(
    problem: Problem, key: str, estimate: Estimate, constraint: Constraint, text: str
) -> None:
    bound = bound_value(constraint)
    if bound is None or constraint.op not in OPS:
        return
    span = constraint.span.to_span() if constraint.span else None
    check = OPS[constraint.op](estimate.term, real(bound))
    problem.track(key, check, span, text, constraint=True)
    problem.bounds[key] = (estimate.key, constraint.op, bound)
    literal = constraint.bound
    if literal is not None and literal.span is not None:
        problem.bound_literals[key] = (literal.span.to_span(), literal.text)

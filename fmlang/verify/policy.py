"""Policies in the same solver: PII flow, DP budgets, licenses, merges, ranks, fairness
(access grants are set algebra: `access.py`). Every fact is a tracked assertion, so a
violation's unsat core labels each line that contributes to it (the @pii tag, the training
data, the constraint, ...)."""

from __future__ import annotations

import z3

from fmlang.ir.nodes import Dataset, Deployment, DropColumns, Merge, Model, Redact, Spec
from fmlang.verify.problem import Problem, real, tabulate
from fmlang.verify.spans import SpanIndex

DP_PERMISSIONS = ("train", "read")


def encode_policies(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for rule in (_pii, _dp_budgets, _licenses, _merges, _ranks, _fairness):
        rule(problem, spans, spec)


def training_dataset(spec: Spec, model: Model) -> Dataset | None:
    data = model.training.data if model.training else None
    if data is None:
        return None
    name = data.dataset
    if data.labels:
        labels = spec.labels_block(data.labels)
        name = labels.dataset if labels else name
    return spec.dataset(name)


def _fact(problem: Problem, key: str, value: bool, span: object, text: str) -> z3.BoolRef:
    var = z3.Bool(key)
    problem.track(f"fact:{key}", var == value, span, text)  # type: ignore[arg-type]
    return var


# ---- PII --------------------------------------------------------------------------


def _tainted_dataset(problem: Problem, spans: SpanIndex, dataset: Dataset) -> z3.BoolRef:
    cleared: dict[str, str] = {}  # dropping a column, or `redact pii in it`, clears it
    for step in dataset.cleaning:
        redacts_all = isinstance(step, Redact) and "pii" in step.kinds
        if isinstance(step, DropColumns) or redacts_all:
            for name in step.columns:  # type: ignore[union-attr]
                cleared[name] = step.step
    taints = []
    for column in dataset.columns:
        if "pii" not in column.tags:
            continue
        pii = _fact(
            problem,
            f"pii:{dataset.name}.{column.name}",
            True,
            spans.column(dataset.name, column.name),
            f"`{column.name}` is tagged @pii",
        )
        if column.name in cleared:
            continue
        taints.append(pii)
    return z3.Or(*taints) if taints else z3.BoolVal(False)


def _pii(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for model in spec.models:
        dataset = training_dataset(spec, model)
        if dataset is None:
            continue
        tainted_data = _tainted_dataset(problem, spans, dataset)
        trains = _fact(
            problem,
            f"trains:{model.name}",
            True,
            spans.setting("model", model.name, "train.data"),
            f"`{model.name}` trains on `{dataset.name}`",
        )
        dp = model.training is not None and model.training.dp is not None
        private = _fact(
            problem,
            f"dp:{model.name}",
            dp,
            spans.setting("model", model.name, "train.dp" if dp else "train"),
            f"`{model.name}` {'uses' if dp else 'does not use'} DP-SGD",
        )
        flows = z3.And(trains, tainted_data, z3.Not(private))
        for constraint in spec.constraints_on(model.name):
            if constraint.metric == "no_pii" and constraint.span is not None:
                sink = constraint.values[0] if constraint.values else "training_data"
                problem.track(
                    f"no_pii:{model.name}:{sink}",
                    z3.Not(flows),
                    constraint.span.to_span(),
                    f"no personal data may reach `{model.name}`'s {sink}",
                    constraint=True,
                )
        deployment = next((d for d in spec.deployments if d.target == model.name), None)
        if deployment is not None and deployment.visibility == "public":
            problem.track(
                f"public:{model.name}",
                z3.Not(flows),
                spans.setting("deploy", model.name, "visibility"),
                "a public endpoint may not serve a model trained on personal data without DP",
                constraint=True,
            )


# ---- DP budgets -------------------------------------------------------------------


def _dp_budgets(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for dataset in spec.datasets:
        spent = []
        for model in spec.models:
            dp = model.training.dp if model.training else None
            if dp is None or dp.epsilon is None or training_dataset(spec, model) != dataset:
                continue
            if model.selection is not None:  # trains nothing itself: its candidates spend
                continue
            eps = z3.Real(f"eps:{model.name}")
            problem.track(
                f"eps:{model.name}",
                eps == real(dp.epsilon),
                spans.setting("model", model.name, "train.dp"),
                f"`{model.name}` spends epsilon {dp.epsilon:g}",
            )
            spent.append(eps)
        if not spent:
            continue
        total = sum(spent[1:], spent[0])
        limits = [
            (dataset.epsilon_budget, spans.setting("dataset", dataset.name, "epsilon_budget"))
        ]
        for c in spec.constraints:
            if c.metric == "dp_epsilon" and c.on_data and c.on_data.dataset == dataset.name:
                limits.append(
                    (c.bound.value if c.bound else None, c.span.to_span() if c.span else None)
                )
        for index, (limit, span) in enumerate(limits):
            if limit is not None:
                problem.track(
                    f"budget:{dataset.name}:{index}",
                    total <= real(limit),
                    span,
                    f"models trained on `{dataset.name}` may spend epsilon {limit:g} in all",
                    constraint=True,
                )


# ---- licenses, merges, ranks --------------------------------------------------------


def _bases(spec: Spec, target: str) -> list[str]:
    merge = spec.merge(target)
    names = list(merge.models) if merge else [target]
    return [m.base for m in (spec.model(n) for n in names) if m is not None and m.base]


def _licenses(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for c in spec.constraints:
        if c.kind != "license" or c.span is None:
            continue
        for base_name in _bases(spec, c.target):
            base = spec.base_model(base_name)
            if base is None:
                continue
            if c.op == "allows":
                ok = all(use in base.license_allows for use in c.values)
                why = f"allows {', '.join(base.license_allows) or 'nothing declared'}"
            else:
                ok = (base.license or "") in c.values
                why = f"is `{base.license}`"
            fact = _fact(
                problem,
                f"license:{c.target}:{base.name}:{c.span.line}",
                ok,
                spans.setting("model", _model_on(spec, c.target, base.name), "base"),
                f"`{base.name}`'s license {why}",
            )
            wanted = (
                f"allow {', '.join(c.values)} use"
                if c.op == "allows"
                else f"be one of {', '.join(c.values)}"
            )
            problem.track(
                f"license:{c.target}:{base.name}:{c.span.line}:c",
                fact,
                c.span.to_span(),
                f"the license must {wanted}",
                constraint=True,
            )


def _model_on(spec: Spec, target: str, base: str) -> str:
    merge = spec.merge(target)
    for name in merge.models if merge else (target,):
        model = spec.model(name)
        if model is not None and model.base == base:
            return name
    return target


SAME_RANK = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune", "task_arithmetic")


def _merges(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for merge in spec.merges:
        models = [m for m in (spec.model(n) for n in merge.models) if m is not None]
        method = spans.setting("merge", merge.name, "method")
        for other in models[1:]:
            _same(problem, spans, merge, models[0], other, method)


def _same(
    problem: Problem, spans: SpanIndex, merge: Merge, first: Model, other: Model, method: object
) -> None:
    key = f"merge:{merge.name}:{other.name}"
    same_base = first.base == other.base
    base_fact = _fact(
        problem,
        f"{key}:base",
        same_base,
        spans.setting("model", other.name, "base"),
        f"`{other.name}` adapts `{other.base}`, `{first.name}` adapts `{first.base}`",
    )
    problem.track(
        f"{key}:base:c",
        base_fact,
        method,  # type: ignore[arg-type]
        "merging needs one base model",
        constraint=False,
    )
    kinds = (
        first.adapter.kind if first.adapter else None,
        other.adapter.kind if other.adapter else None,
    )
    kind_fact = _fact(
        problem,
        f"{key}:kind",
        kinds[0] == kinds[1],
        spans.setting("model", other.name, "adapter"),
        f"adapter kinds {kinds[0]} and {kinds[1]}",
    )
    problem.track(
        f"{key}:kind:c",
        kind_fact,
        method,  # type: ignore[arg-type]
        "merged adapters must be of one kind",
    )
    first_rank = problem.choices.get(f"{first.name}.rank")
    other_rank = problem.choices.get(f"{other.name}.rank")
    if merge.method in SAME_RANK and first_rank and other_rank:
        same = tabulate([first_rank], float) == tabulate([other_rank], float)
        problem.track(
            f"{key}:rank",
            same,
            method,  # type: ignore[arg-type]
            f"`{merge.method}` merges adapters of equal rank",
        )


def _ranks(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for deployment in spec.deployments:
        for names in _served_adapters(spec, deployment.target):
            _max_rank(problem, spans, spec, deployment, names)


def _served_adapters(spec: Spec, target: str) -> list[list[str]]:
    """The adapters a deployment of `target` may serve, one list per possibility: each
    candidate of a model that selects its base (the winner is known after training)."""
    model = spec.model(target)
    if model is not None and model.selection is not None:
        return [[m.name] for m in spec.models if m.candidate_of == target]
    return [_adapter_models(spec, target)]


def _max_rank(
    problem: Problem, spans: SpanIndex, spec: Spec, deployment: Deployment, names: list[str]
) -> None:
    ranks = [problem.choices[f"{n}.rank"] for n in names if f"{n}.rank" in problem.choices]
    if not ranks:
        return
    merge = spec.merge(deployment.target)
    total = [tabulate([r], float) for r in ranks]
    served_rank = sum(total[1:], total[0]) if merge and merge.method == "cat" else total[0]
    suffix = f":{names[0]}" if names[0] != deployment.target and not merge else ""
    for target in deployment.targets:
        if target.max_lora_rank is not None:
            problem.track(
                f"maxrank:{deployment.name}:{target.kind}{suffix}",
                served_rank <= target.max_lora_rank,
                spans.setting("deploy", deployment.name, f"{target.kind}.max_lora_rank"),
                f"the {target.runtime or target.kind} runtime accepts rank "
                f"<= {target.max_lora_rank}",
                constraint=True,
            )


def _adapter_models(spec: Spec, target: str) -> list[str]:
    merge = spec.merge(target)
    return list(merge.models) if merge else [target]


# ---- fairness -----------------------------------------------------------------------


def _fairness(problem: Problem, spans: SpanIndex, spec: Spec) -> None:
    for c in spec.constraints:
        if c.kind != "fairness" or c.on_data is None or c.span is None:
            continue
        by = next((str(o.value) for o in c.options if o.name == "by"), None)
        dataset = spec.dataset(c.on_data.dataset)
        if by is None or dataset is None:
            continue
        column = next((col for col in dataset.columns if col.name == by), None)
        inputs = {
            m.training.input
            for m in spec.models
            if m.name in _adapter_models(spec, c.target) and m.training
        }
        checks = (
            (column is not None, f"`{by}` is a column of `{dataset.name}`"),
            (column is not None and "protected" in column.tags, f"`{by}` is tagged @protected"),
            (column is not None and column.type in ("category", "label"), f"`{by}` is categorical"),
            (by not in inputs, f"`{by}` is not the model's input"),
        )
        for index, (ok, text) in enumerate(checks):
            fact = _fact(
                problem,
                f"fair:{c.span.line}:{index}",
                ok,
                spans.column(dataset.name, by),
                text if ok else f"not: {text}",
            )
            problem.track(
                f"fair:{c.span.line}:{index}:c",
                fact,
                c.span.to_span(),
                "fairness groups by a protected, categorical column that is not an input",
                constraint=True,
            )

"""`base_model`, `hardware`, `model`, `merge` and `deploy` blocks → IR.

Each block's settings are converted by the table in `check/schema.py`; the IR field of a
setting has the setting's name, except `train` → `training`, `eval` → `evaluation` and
`select` → `selection` (with the candidates of `base auto in [...]`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fmlang.check import schema as s
from fmlang.ir import nodes as ir
from fmlang.ir.values import CallValue, Scope, convert, data_ref, grants, settings, span_of
from fmlang.syntax import ast

TARGET_KINDS = ("local", "kserve", "kubernetes", "compose")
M = TypeVar("M", bound=ir.Node)


def validate(model: type[M], values: dict[str, Any]) -> M:
    """`model` from converted settings. A setting with no IR field yet is left out rather
    than failing the build (tests/test_ir.py checks every schema row has a field)."""
    return model.model_validate({k: v for k, v in values.items() if k in model.model_fields})


def build_pretrained(node: ast.Block, scope: Scope) -> ir.PretrainedModel:
    values = settings(node.body, s.BASE_MODEL, scope)
    weights = values.pop("weights", None)
    return validate(ir.PretrainedModel, {
        **values, "name": node.name.name, "file": scope.ir_file, "span": span_of(node.name),
        "weights": _weights(weights) if isinstance(weights, CallValue) else None,
    })  # fmt: skip


def _weights(value: CallValue) -> ir.WeightsSource:
    location = value.positional[0] if value.positional else ""
    return validate(ir.WeightsSource, {
        "kind": value.head, "location": str(location), "revision": value.keywords.get("revision"),
        "id": value.keywords.get("id"),
    })  # fmt: skip


def build_hardware(node: ast.Block, scope: Scope) -> ir.Hardware:
    values = settings(node.body, s.HARDWARE, scope)
    return validate(
        ir.Hardware,
        {**values, "name": node.name.name, "file": scope.ir_file, "span": span_of(node.name)},
    )


# ---- models -------------------------------------------------------------------------


def build_model(node: ast.Block, scope: Scope) -> ir.Model:
    values = settings(node.body, s.MODEL, scope)
    train = values.get("train")
    training = _training(train) if isinstance(train, dict) else None
    adapter = values.get("adapter")
    selection = _selection(node, values, scope)  # then its candidates have the base
    return validate(ir.Model, {
        "name": node.name.name, "file": scope.ir_file, "span": span_of(node.name),
        "base": _base(values.get("base")) if selection is None else None,
        "selection": selection,
        "task": _task(values.get("task"), scope),
        "adapter": _adapter(adapter) if isinstance(adapter, CallValue) else None,
        "quantize": values.get("quantize", ir.Knob(fixed="none")),
        "max_seq": values.get("max_seq"),
        "training": training,
        "evaluation": _evaluation(values.get("eval")),
        "grants": grants(node.body),
    })  # fmt: skip


def _base(value: Any) -> str | None:
    """`base minilm_l6` → its name; `base auto in [...]` → None (the model selects)."""
    if isinstance(value, ir.Knob) and not value.auto and isinstance(value.fixed, str):
        return value.fixed
    return None


def _selection(node: ast.Block, values: dict[str, Any], scope: Scope) -> ir.Selection | None:
    """`base auto in [a, b]` and/or `adapter auto in [x(...), y(...)]` with `select by METRIC
    on SPLIT` (`fmlang.ir.selection`): a candidate per base and adapter pair."""
    base = values.get("base")
    choices = base.choices or () if isinstance(base, ir.Knob) and base.auto else None
    adapters = _adapter_candidates(node, scope)
    if choices is None and adapters is None:
        return None
    selects_base = choices is not None
    bases = [str(c) for c in choices] if choices is not None else [_base(base) or ""]
    options = _options(bases, selects_base, adapters)
    metric = values.get("select")
    written = next((st for st in node.body if isinstance(st, ast.Setting) and st.by), None)
    on = data_ref(written.on, scope) if written is not None and written.on is not None else None
    return ir.Selection(
        candidates=tuple(c.key for c in options),
        options=tuple(options),
        metric=metric if isinstance(metric, str) else "accuracy",
        on=on,
        lower_is_better=metric in s.LOWER_IS_BETTER,
        span=span_of(written) if written is not None else span_of(node.name),
    )


def _options(
    bases: list[str], selects_base: bool, adapters: list[ir.Adapter] | None
) -> list[ir.Candidate]:
    """A candidate per base and adapter; its key names what varies (`fmlang.ir.selection`)."""
    labelled: list[tuple[str, ir.Adapter | None]] = (
        list(zip(adapter_labels(adapters), adapters, strict=True)) if adapters else [("", None)]
    )
    keyed = [
        ("+".join(k for k in (b if selects_base else "", label) if k), b, adapter)
        for b in bases
        for label, adapter in labelled
    ]
    return [ir.Candidate(key=key, base=b, adapter=adapter) for key, b, adapter in keyed]


def _adapter_candidates(node: ast.Block, scope: Scope) -> list[ir.Adapter] | None:
    """`adapter auto in [lora(rank = 8), fisher_mask(density = 0.5%)]`: each adapter; None
    when the model names one adapter (or none)."""
    written = next((st for st in node.body if isinstance(st, ast.Setting)
                    and st.key.name == "adapter"), None)  # fmt: skip
    value = scope.deref(written.value) if written is not None else None
    if not isinstance(value, ast.Auto):
        return None
    items = value.domain.items if isinstance(value.domain, ast.ListExpr) else ()
    calls = [convert(s.MODEL["adapter"], item, scope) for item in items]
    return [_adapter(c) for c in calls if isinstance(c, CallValue)]


def adapter_labels(adapters: list[ir.Adapter]) -> list[str]:
    """Each adapter's kind, numbered in order when a kind repeats (`lora_1`, `lora_2`)."""
    kinds = [a.kind for a in adapters]
    seen: dict[str, int] = {}
    labels = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        labels.append(f"{kind}_{seen[kind]}" if kinds.count(kind) > 1 else kind)
    return labels


def _training(values: dict[str, Any]) -> ir.Training:
    dp = values.get("dp")
    return validate(
        ir.Training, {**values, "dp": validate(ir.DPConfig, dp) if isinstance(dp, dict) else None}
    )


def _evaluation(values: Any) -> ir.Evaluation | None:
    return validate(ir.Evaluation, values) if isinstance(values, dict) else None


def _adapter(value: CallValue) -> ir.Adapter:
    return validate(ir.Adapter, {**value.keywords, "kind": value.head})


def _task(value: Any, scope: Scope) -> ir.Task | None:
    if not isinstance(value, CallValue):
        return None
    labels = value.positional[0] if value.positional else None
    classes = _labels_classes(labels, scope) if isinstance(labels, str) else ()
    return validate(ir.Task, {"kind": value.head, "labels": labels, "classes": classes})


def _labels_classes(name: str, scope: Scope) -> tuple[str, ...]:
    symbol = scope.lookup(name)
    if symbol is None or not isinstance(symbol.node, ast.Labels):
        return ()
    classes = settings(symbol.node.body, s.LABELS, scope).get("classes", ())
    return tuple(classes)


# ---- merges and deployments ---------------------------------------------------------


def build_merge(node: ast.Block, scope: Scope) -> ir.Merge:
    values = settings(node.body, s.MERGE, scope)
    method = values.get("method")
    return ir.Merge(
        name=node.name.name,
        file=scope.ir_file,
        models=values.get("models", ()),
        method=method.head if isinstance(method, CallValue) else "linear",
        method_options=method.options() if isinstance(method, CallValue) else (),
        weights=values.get("weights", ()),
        evaluation=_evaluation(values.get("eval")),
        grants=grants(node.body),
        span=span_of(node.name),
    )


def build_deployment(node: ast.Block, scope: Scope) -> ir.Deployment:
    values = settings(node.body, s.DEPLOY, scope)
    targets = tuple(
        validate(ir.DeployTarget, {**values[key], "kind": key})
        for key in _written_order(node, TARGET_KINDS)
        if isinstance(values.get(key), dict)
    )
    plain = {k: v for k, v in values.items() if k not in TARGET_KINDS}
    symbol = scope.lookup(node.name.name)
    target_kind = symbol.kind if symbol is not None and symbol.kind in ("model", "merge") else None
    return validate(ir.Deployment, {
        **plain, "name": node.name.name, "file": scope.ir_file, "target": node.name.name,
        "target_kind": target_kind, "targets": targets, "grants": grants(node.body),
        "span": span_of(node.name),
    })  # fmt: skip


def _written_order(node: ast.Block, keys: tuple[str, ...]) -> list[str]:
    seen: list[str] = []
    for stmt in node.body:
        if (
            isinstance(stmt, ast.BlockSetting)
            and stmt.key.name in keys
            and stmt.key.name not in seen
        ):
            seen.append(stmt.key.name)
    return seen

"""Who may run each stage: grants along every data → labels → model → merge → endpoint path,
failing closed.

Every stage has a *path* of (declaration, permission) steps from the data it comes from to
itself. A principal may run the stage when every step that declares the permission grants it
to them, and the path's roots (the datasets, or a model with no training data, or an
endpoint's `query`) must declare it: no grant means no access.

| stage | path (root first) |
|---|---|
| `data:D` | `read` on D |
| `labels:L` (on D) | `label` on D, `label` on L |
| `labels:L@E.S` (L applied to E.S) | `labels:L`'s path, and `label` on E, `label` on L |
| `train:M` (on D, maybe through L) | `train` on D, `train` on L, `train` on M |
| deploying M (on D) | `deploy` on D, `deploy` on M (root: M itself when it has no data) |
| `merge:G` | deploying each parent, `train` on G |
| deploying G | deploying each parent, `deploy` on G |
| `deploy:E` (of T) | deploying T, `deploy` on E |
| `query:E` | `query` on E |

`fmc check` reports a stage nobody may run (FM0611) and a grant whose principal is refused
further up its path (FM0604); `fmc run` asks `allowed(stage)` for the running principal
before any stage starts. This module is pure: no solver, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fmlang.diagnostics import Diagnostic, Label, Span, error
from fmlang.ir.nodes import Deployment, Grant, Model, Spec


@dataclass(frozen=True)
class Step:
    """One declaration's say on one permission. `holders` is None when the declaration
    grants that permission to nobody explicitly; `root` steps must declare it."""

    kind: str  # dataset | labels | model | merge | deploy
    name: str
    permission: str
    holders: frozenset[str] | None
    root: bool
    span: Span | None  # the first grant of the permission, else the declaration

    @property
    def what(self) -> str:
        return f"{'endpoint' if self.kind == 'deploy' else self.kind} `{self.name}`"


Chain = tuple[Step, ...]  # root first


@dataclass(frozen=True)
class StagePath:
    """A stage's chains of steps, one per source it comes from: a merge has one per merged
    model, everything else one."""

    stage: str  # data:D, labels:L, train:M, merge:G, deploy:E, query:E
    permission: str  # what the stage does, in the grants' words
    chains: tuple[Chain, ...]
    span: Span | None  # the stage's own declaration

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(dict.fromkeys(s for chain in self.chains for s in chain))

    @property
    def allowed(self) -> frozenset[str]:
        """The principals every step admits; empty when a root declares no grant."""
        allowed: frozenset[str] | None = None
        for step in self.steps:
            if step.holders is None:
                if step.root:
                    return frozenset()
                continue
            allowed = step.holders if allowed is None else allowed & step.holders
        return allowed or frozenset()


class AccessModel:
    """Every stage's path for one spec."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.paths: dict[str, StagePath] = {p.stage: p for p in self._paths()}

    def allowed(self, stage: str) -> frozenset[str]:
        path = self.paths.get(stage)
        return path.allowed if path else frozenset()

    def _paths(self) -> Iterator[StagePath]:
        spec = self.spec
        for d in spec.datasets:
            if d.source is not None:
                read = _step("dataset", d.name, d.grants, "read", d.span, True)
                yield StagePath(f"data:{d.name}", "read", ((read,),), _span(d.span))
        for lb in spec.labels:
            labelled = (
                _step("dataset", lb.dataset, self._dataset_grants(lb.dataset), "label",
                      self._dataset_span(lb.dataset), True),
                _step("labels", lb.name, lb.grants, "label", lb.span),
            )  # fmt: skip
            yield StagePath(f"labels:{lb.name}", "label", (labelled,), _span(lb.span))
            for ref in lb.apply_to:  # the fitted functions, run on another split or dataset
                target = _step("dataset", ref.dataset, self._dataset_grants(ref.dataset),
                               "label", self._dataset_span(ref.dataset), True)  # fmt: skip
                yield StagePath(f"labels:{lb.name}@{ref.dataset}.{ref.split or 'all'}", "label",
                                (labelled, (target, labelled[1])), _span(lb.span))  # fmt: skip
        for m in spec.models:
            if m.training is not None:
                yield StagePath(f"train:{m.name}", "train", (self._trains(m),), _span(m.span))
        for g in spec.merges:
            own = _step("merge", g.name, g.grants, "train", g.span)
            chains = tuple(
                (*c, own) for parent in g.models for c in self._deploys(parent, {g.name})
            )
            yield StagePath(f"merge:{g.name}", "merge", chains or ((own,),), _span(g.span))
        for e in spec.deployments:
            yield StagePath(f"deploy:{e.name}", "deploy", self._endpoint(e), _span(e.span))
            query = _step("deploy", e.name, e.grants, "query", e.span, True)
            yield StagePath(f"query:{e.name}", "query", ((query,),), _span(e.span))

    def _trains(self, model: Model) -> Chain:
        ref = model.training.data if model.training else None
        steps: list[Step] = []
        if ref is not None:
            labels = self.spec.labels_block(ref.labels) if ref.labels else None
            name = labels.dataset if labels else ref.dataset
            steps.append(_step("dataset", name, self._dataset_grants(name), "train",
                               self._dataset_span(name), True))  # fmt: skip
            if labels is not None:
                steps.append(_step("labels", labels.name, labels.grants, "train", labels.span))
        steps.append(_step("model", model.name, model.grants, "train", model.span, not steps))
        return tuple(steps)

    def _deploys(self, name: str, seen: set[str]) -> tuple[Chain, ...]:
        """The chains deploying model or merge `name` passes through."""
        if name in seen:  # a merge cycle is the checker's error, not ours
            return ()
        seen = seen | {name}
        model, merge = self.spec.model(name), self.spec.merge(name)
        if merge is not None:
            own = _step("merge", merge.name, merge.grants, "deploy", merge.span)
            return tuple((*c, own) for parent in merge.models for c in self._deploys(parent, seen))
        if model is None:
            return ()
        trains = self._trains(model) if model.training else ()
        chain = [_step("dataset", s.name, self._dataset_grants(s.name), "deploy",
                       self._dataset_span(s.name), True)
                 for s in trains if s.kind == "dataset"]  # fmt: skip
        chain.append(_step("model", model.name, model.grants, "deploy", model.span, not chain))
        return (tuple(chain),)

    def _endpoint(self, deployment: Deployment) -> tuple[Chain, ...]:
        upstream = self._deploys(deployment.target, set())
        own = _step("deploy", deployment.name, deployment.grants, "deploy", deployment.span,
                    not upstream)  # fmt: skip
        return tuple((*c, own) for c in upstream) or ((own,),)

    def _dataset_grants(self, name: str) -> tuple[Grant, ...]:
        data = self.spec.dataset(name)
        return data.grants if data else ()

    def _dataset_span(self, name: str) -> object:
        data = self.spec.dataset(name)
        return data.span if data else None


def _span(node_span: object) -> Span | None:
    to_span = getattr(node_span, "to_span", None)
    return to_span() if to_span is not None else None


def _step(kind: str, name: str, grants: tuple[Grant, ...], permission: str, decl: object,
          root: bool = False) -> Step:  # fmt: skip
    mine = [g for g in grants if g.permission == permission]
    holders = frozenset(p for g in mine for p in g.principals) if mine else None
    span = _span(mine[0].span) if mine else _span(decl)
    return Step(kind, name, permission, holders, root, span)


# ---- diagnostics ----------------------------------------------------------------------


def access_diagnostics(spec: Spec) -> list[Diagnostic]:
    """FM0604 for every granted principal a step further up its chain refuses (once per
    principal and refusing step); FM0611 for every stage nobody may run, unless an FM0604
    already names its cause."""
    model = AccessModel(spec)
    out: list[Diagnostic] = []
    reported: set[tuple[str, Step]] = set()
    for path in model.paths.values():
        refusals = _uncovered(path)
        out.extend(d for key, d in refusals.items() if key not in reported)
        reported.update(refusals)
        if not path.allowed and not refusals:
            out.append(_nobody(path))
    return out


def _nobody(path: StagePath) -> Diagnostic:
    missing = next((s for s in path.steps if s.root and s.holders is None), None)
    name = path.stage.split(":", 1)[1]
    if missing is not None:
        return error(
            "FM0611",
            f"nobody may {_verb(path)} `{name}`: {missing.what} grants "
            f"`{missing.permission}` to no one",
            missing.span,
            f"no `grant {missing.permission} to …` here",
            help=f'add `grant {missing.permission} to "PRINCIPAL"` to {missing.what} '
            "(no grant means no access)",
            related=_related(path, exclude=missing),
        )
    declared = [s for s in path.steps if s.holders is not None]
    last = declared[-1]
    return error(
        "FM0611",
        f"nobody may {_verb(path)} `{name}`: no principal holds every grant along its path",
        last.span,
        f"`{last.permission}` only to {_names(last.holders)}",
        help="grant the same principal every permission on the path: "
        + ", ".join(f"`{s.permission}` on {s.what}" for s in declared),
        related=_related(path, exclude=last),
    )


def _uncovered(path: StagePath) -> dict[tuple[str, Step], Diagnostic]:
    """A principal granted a permission on a step but refused by an earlier step of the
    same chain, keyed by (principal, refusing step): the grant nearest the root is the
    one reported."""
    out: dict[tuple[str, Step], Diagnostic] = {}
    for chain in path.chains:
        for index, step in enumerate(chain):
            for principal in sorted(step.holders or ()):
                refusing = next((s for s in chain[:index] if _refuses(s, principal)), None)
                if refusing is None or (principal, refusing) in out:
                    continue
                out[(principal, refusing)] = error(
                    "FM0604",
                    f"`{principal}` may {step.permission} {step.what} but not "
                    f"`{refusing.permission}` on {refusing.what}",
                    step.span,
                    f"granted to `{principal}` here",
                    help=f'add `grant {refusing.permission} to "{principal}"` to '
                    f"{refusing.what}, or remove `{principal}` from this grant",
                    related=(Label(refusing.span, _granted_text(refusing), False),)
                    if refusing.span
                    else (),
                )
    return out


def _refuses(step: Step, principal: str) -> bool:
    if step.holders is None:
        return step.root
    return principal not in step.holders


def _related(path: StagePath, exclude: Step) -> tuple[Label, ...]:
    return tuple(
        Label(s.span, _granted_text(s), False)
        for s in path.steps
        if s is not exclude and s.span is not None and s.holders is not None
    )


def _granted_text(step: Step) -> str:
    if step.holders is None:
        return f"no `{step.permission}` grant"
    return f"`{step.permission}` to {_names(step.holders)}"


def _names(holders: frozenset[str] | None) -> str:
    return ", ".join(f"`{p}`" for p in sorted(holders or ())) or "no one"


def _verb(path: StagePath) -> str:
    return {"read": "run the data stage of", "label": "label", "train": "train",
            "merge": "merge", "deploy": "deploy", "query": "query"}[path.permission]  # fmt: skip

"""`fmc run`: execute a verified spec's stages in order, each skipped when its cache key is
unchanged. Stages: data (every dataset), labels (every labels block), then the model stages
that later issues add (train, merge, eval). The report gives each stage that ran its
`reason`: the named inputs that changed (a base model's weights, an upstream stage), that it
never ran here, that its outputs changed, or `--force` (`StageCache.reasons`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fmlang.backends import stopping
from fmlang.backends.cache import StageCache, writing
from fmlang.backends.data.access import Access
from fmlang.backends.data.identity import Principal
from fmlang.backends.data.stages import Outcome, RunContext, data_stage
from fmlang.ir.nodes import Spec
from fmlang.verify.access import AccessModel

STAGES = ("data", "labels", "train", "merge")


@dataclass
class RunOptions:
    build_dir: Path
    entry: Path  # the entry spec file
    until: str = "labels"
    principal: Principal | str | None = None  # a bare name is asserted
    force: bool = False
    log: Callable[[str], None] = print
    progress: Any = None
    allowed_data: tuple[Path, ...] = ()  # `--allow-data`: folders outside the project
    engine: str = "duckdb"  # `--engine`: where the data and labels stages run


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # stage that ran → why

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": "1",
            "stages": [
                {"stage": o.stage, "skipped": o.skipped, "outputs": list(o.outputs)}
                | ({} if o.skipped else {"reason": self.reasons.get(o.stage, "")})
                | _predicted_and_measured(o.summary)
                for o in self.outcomes
            ],
            "privacy": self.privacy(),
        }

    def privacy(self) -> dict[str, dict[str, Any]]:
        """Epsilon spent per dataset, summed over the models trained on it with DP-SGD
        (basic composition: the bound the verifier's `dp_epsilon` check uses)."""
        spent: dict[str, dict[str, Any]] = {}
        for outcome in self.outcomes:
            privacy = outcome.summary.get("privacy") if isinstance(outcome.summary, dict) else None
            if isinstance(privacy, dict) and privacy.get("dataset"):
                entry = spent.setdefault(privacy["dataset"], {"epsilon_spent": 0.0, "models": []})
                entry["epsilon_spent"] += float(privacy["epsilon_spent"])
                entry["models"].append(outcome.stage.split(":", 1)[1])
        return spent


def _predicted_and_measured(summary: dict[str, Any]) -> dict[str, Any]:
    """For model stages: the cost model's estimates beside what the run measured (and, for
    a model that selects its base, every candidate's metrics and the pick)."""
    keys = ("predicted", "memory", "latency", "gates", "privacy", "selection")
    return {k: summary[k] for k in keys if isinstance(summary, dict) and k in summary}


def context(spec: Spec, options: RunOptions, spec_text: str) -> RunContext:
    access = Access.open(
        options.principal,
        options.build_dir,
        hashlib.sha256(spec_text.encode("utf-8")).hexdigest(),
        AccessModel(spec),
    )
    return RunContext(
        spec=spec,
        entry_dir=options.entry.resolve().parent,
        build_dir=options.build_dir.resolve(),
        access=access,
        cache=StageCache.load(options.build_dir.resolve(), log=options.log),
        force=options.force,
        log=options.log,
        progress=options.progress,
        allowed_data=options.allowed_data,
        engine=options.engine,
    )


def run(
    spec: Spec, options: RunOptions, spec_text: str, knobs: dict[str, int | str] | None = None
) -> tuple[RunReport, RunContext]:
    """Run every stage up to and including `options.until`."""
    from fmlang.backends.data.label_apply import applied_stage, applied_stage_name
    from fmlang.backends.data.labeling import labels_stage

    ctx = context(spec, options, spec_text)
    report = RunReport()
    wanted = STAGES[: STAGES.index(options.until) + 1]
    stages: list[tuple[str, Callable[[], Outcome]]] = []
    if "data" in wanted:
        stages += [(f"data:{d.name}", partial(data_stage, ctx, d))
                   for d in spec.datasets if d.source is not None]  # fmt: skip
    if "labels" in wanted:
        stages += [(f"labels:{lb.name}", partial(labels_stage, ctx, lb)) for lb in spec.labels]
        stages += [(applied_stage_name(lb, ref), partial(applied_stage, ctx, lb, ref))
                   for lb in spec.labels for ref in lb.apply_to]  # fmt: skip
    if "train" in wanted:  # a model selecting its base: its candidates, then the pick
        from fmlang.backends.select_stage import train_stages

        stages += train_stages(ctx, spec, knobs or {})
    if "merge" in wanted:
        from fmlang.backends.merge_stage import merge_stage

        stages += [(f"merge:{m.name}", partial(merge_stage, ctx, m, knobs or {}))
                   for m in spec.merges]  # fmt: skip
    ctx.access.require_all([name for name, _ in stages])  # before any work
    for name, stage in stages:
        report.outcomes.append(_logged(ctx, name, stage))
        if not report.outcomes[-1].skipped:
            forced = "--force reruns every stage" if ctx.force else ""
            report.reasons[name] = ctx.cache.reasons.get(name, forced)
        stopping.check(f"after stage `{name}`")  # SIGINT/SIGTERM: stop between stages
    return report, ctx


def _logged(ctx: RunContext, stage: str, fn: Callable[[], Outcome]) -> Outcome:
    ctx.log(f"[bold]{stage}[/]")
    with writing(f"stage `{stage}`"):  # a full disk is FM0722, never an internal error
        outcome = fn()
    ctx.log("  [dim]unchanged: cached[/]" if outcome.skipped else "  [green]done[/]")
    return outcome

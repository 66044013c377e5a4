"""`fmc run`: execute a verified spec's stages in order, each skipped when its cache key is
unchanged. Stages: data (every dataset), labels (every labels block), then the model stages
that later issues add (train, merge, eval)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang.backends.cache import StageCache
from fmlang.backends.data.access import Access, audit_log_path
from fmlang.backends.data.stages import Outcome, RunContext, data_stage
from fmlang.ir.nodes import Spec

STAGES = ("data", "labels")


@dataclass
class RunOptions:
    build_dir: Path
    entry: Path  # the entry spec file
    until: str = "labels"
    principal: str | None = None
    force: bool = False
    log: Callable[[str], None] = print
    progress: Any = None


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": "1",
            "stages": [
                {"stage": o.stage, "skipped": o.skipped, "outputs": list(o.outputs)}
                for o in self.outcomes
            ],
        }


def context(spec: Spec, options: RunOptions, spec_text: str) -> RunContext:
    access = Access(
        options.principal,
        audit_log_path(options.build_dir),
        hashlib.sha256(spec_text.encode("utf-8")).hexdigest(),
    )
    return RunContext(
        spec=spec,
        entry_dir=options.entry.resolve().parent,
        build_dir=options.build_dir.resolve(),
        access=access,
        cache=StageCache.load(options.build_dir.resolve()),
        force=options.force,
        log=options.log,
        progress=options.progress,
    )


def run(spec: Spec, options: RunOptions, spec_text: str) -> tuple[RunReport, RunContext]:
    """Run every stage up to and including `options.until`."""
    from fmlang.backends.data.labeling import labels_stage

    ctx = context(spec, options, spec_text)
    report = RunReport()
    wanted = STAGES[: STAGES.index(options.until) + 1]
    if "data" in wanted:
        for dataset in spec.datasets:
            if dataset.source is not None:
                report.outcomes.append(_logged(ctx, f"data:{dataset.name}",
                                               lambda d=dataset: data_stage(ctx, d)))  # fmt: skip
    if "labels" in wanted:
        for labels in spec.labels:
            report.outcomes.append(_logged(ctx, f"labels:{labels.name}",
                                           lambda lb=labels: labels_stage(ctx, lb)))  # fmt: skip
    return report, ctx


def _logged(ctx: RunContext, stage: str, fn: Callable[[], Outcome]) -> Outcome:
    ctx.log(f"[bold]{stage}[/]")
    outcome = fn()
    ctx.log("  [dim]unchanged: cached[/]" if outcome.skipped else "  [green]done[/]")
    return outcome

"""`fmc run`: execute a verified spec's stages in order, each skipped when its cache key is
unchanged. Stages: data (every dataset), labels (every labels block), then the model stages
that later issues add (train, merge, eval). The report gives each stage that ran its
`reason`: the named inputs that changed (a base model's weights, an upstream stage), that it
never ran here, that its outputs changed, or `--force` (`StageCache.reasons`).

With `capture`, what the libraries print while a stage runs goes to the stage's log file
(`stage_output.py`). A dry run (`--dry-run`) runs nothing: each stage computes its key and
stops there (`cache.WouldRun`), and the report's `planned` says which would run and why."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fmlang.backends import stopping
from fmlang.backends.cache import StageCache, WouldRun, writing
from fmlang.backends.data.access import Access
from fmlang.backends.data.identity import Principal
from fmlang.backends.data.stages import Outcome, RunContext, data_stage
from fmlang.backends.stage_output import captured
from fmlang.errors import StageError
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
    dry_run: bool = False  # `--dry-run`: say which stages would run, run none
    capture: bool = False  # the libraries' output into each stage's log file
    descriptors: bool = False  # ... fds 1 and 2 included (`stage_output.captured`)


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # stage that ran → why
    seconds: dict[str, float] = field(default_factory=dict)  # stage → wall time
    logs: dict[str, str] = field(default_factory=dict)  # stage that ran → its log file
    planned: dict[str, str] = field(default_factory=dict)  # dry run: stage that would run → why
    order: list[str] = field(default_factory=list)  # dry run: every stage, in order

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
        cache=_cache(options),
        force=options.force,
        log=options.log,
        progress=options.progress,
        allowed_data=options.allowed_data,
        engine=options.engine,
    )


def _cache(options: RunOptions) -> StageCache:
    cache = StageCache.load(options.build_dir.resolve(), log=options.log)
    cache.dry = options.dry_run
    return cache


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
        if options.dry_run:
            _plan(ctx, report, name, stage)
            continue
        report.outcomes.append(_logged(ctx, options, report, name, stage))
        if not report.outcomes[-1].skipped:
            forced = "--force reruns every stage" if ctx.force else ""
            report.reasons[name] = ctx.cache.reasons.get(name, forced)
        stopping.check(f"after stage `{name}`")  # SIGINT/SIGTERM: stop between stages
    return report, ctx


def _logged(
    ctx: RunContext, options: RunOptions, report: RunReport, stage: str, fn: Callable[[], Outcome]
) -> Outcome:
    """Run one stage: timed, shown on the display (else logged), its libraries' output in
    its log file (kept only when the stage ran)."""
    display = ctx.progress
    if display is not None:
        display.begin(stage)
    else:
        ctx.log(f"[bold]{stage}[/]")
    started = time.perf_counter()
    try:
        with writing(f"stage `{stage}`"), _captured(ctx, options, stage) as log:
            outcome = fn()
    except BaseException:  # a failure, a stop request: the display ends first
        if display is not None:
            display.failed(stage, time.perf_counter() - started)
        raise
    report.seconds[stage] = round(time.perf_counter() - started, 3)
    if log is not None:
        if outcome.skipped or log.stat().st_size == 0:  # nothing to read there
            log.unlink(missing_ok=True)
        else:
            report.logs[stage] = log.relative_to(ctx.build_dir).as_posix()
    if display is not None:
        display.end(stage, not outcome.skipped, report.seconds[stage])
    else:
        ctx.log("  [dim]unchanged: cached[/]" if outcome.skipped else "  [green]ran[/]")
    return outcome


@contextmanager
def _captured(ctx: RunContext, options: RunOptions, stage: str) -> Iterator[Path | None]:
    if not options.capture:
        yield None
        return
    from rich.markup import escape

    def screen(line: str) -> None:  # fmc's own notes, as plain text
        ctx.log(f"  {escape(line)}")

    with captured(ctx.build_dir, stage, options.descriptors, screen) as path:
        yield path


def _plan(ctx: RunContext, report: RunReport, name: str, stage: Callable[[], Outcome]) -> None:
    """A dry run's stage: cached (its outcome, as a run would report it) or planned, with
    why. A stage that cannot even compute its key because a stage before it has not run
    (its inputs do not exist yet) is planned after that one."""
    ctx.cache.read.clear()
    report.order.append(name)
    if ctx.force:
        report.planned[name] = "--force reruns every stage"
        return
    try:
        report.outcomes.append(stage())
    except WouldRun:
        report.planned[name] = _planned_reason(ctx, report, name)
    except StageError:
        first = [s for s in ctx.cache.read if s in report.planned] or list(report.planned)
        if not first:
            raise  # the run itself would fail here
        report.planned[name] = f"`{first[0]}` would run first"


def _planned_reason(ctx: RunContext, report: RunReport, name: str) -> str:
    """The cache's reason, led by the upstream stages that would run (their changed keys
    are what changed, not worth a digest each)."""
    first = [s for s in dict.fromkeys(ctx.cache.read) if s in report.planned]
    own = [
        part
        for part in ctx.cache.reasons.get(name, "").split("; ")
        if part and part != "its inputs or settings changed"
        and not any(part.startswith((f"stage `{s}` changed", f"{s} changed")) for s in first)
    ]  # fmt: skip
    reasons = [f"`{s}` would run first" for s in first] + own
    return "; ".join(reasons) or "its inputs or settings changed"

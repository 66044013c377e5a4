"""What `fmc run` shows: each stage's name and the few lines it logs, one live progress bar
while it runs (steps, ETA, loss) and how it ended; then the run's summary.

On a terminal the bar is rich's, drawn under the stage's lines and gone when the stage
ends. Anywhere else (a pipe, a CI log) there is no bar: a long stage prints a plain line at
each quarter of its steps, at most one every `PLAIN_EVERY_S` seconds, so a log shows that
it moves without a line per step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

PLAIN_EVERY_S = 10.0


class StageDisplay:
    """The `progress.StageProgress` of `fmc run`."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console, self.live = console, live
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._stage = ""
        self._total, self._done, self._unit = 0, 0, "steps"
        self._started = self._last_line = 0.0

    def begin(self, stage: str) -> None:
        self.console.print(f"[bold]{escape(stage)}[/]")
        self._stage, self._total, self._done = stage, 0, 0
        self._started = self._last_line = time.monotonic()
        if self.live:
            self._bar = _live_bar(self.console)
            self._bar.start()
            self._task = self._bar.add_task(stage, total=None, unit="", loss="")

    def steps(self, total: int, unit: str = "steps") -> None:
        self._total, self._done, self._unit = total, 0, unit
        if self._bar is not None and self._task is not None:
            self._bar.reset(self._task, total=total, unit=unit, loss="")

    def advance(self, loss: float | None = None) -> None:
        self._done += 1
        shown = f"loss {loss:.4g}" if loss is not None else ""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, loss=shown)
        elif self._total and self._quarter_passed():
            self.console.print(f"  [dim]{self._plain_line(shown)}[/]")

    def failed(self, stage: str, seconds: float) -> None:
        self._stop_bar()
        self.console.print(f"  [red]stopped[/] after {_seconds(seconds)}")

    def end(self, stage: str, ran: bool, seconds: float) -> None:
        self._stop_bar()
        if ran:
            self.console.print(f"  [green]ran[/] in {_seconds(seconds)}")
        else:
            self.console.print("  [dim]cached: unchanged since its last run[/]")

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None

    def _quarter_passed(self) -> bool:
        now = time.monotonic()
        quarter = self._done * 4 // self._total
        before = (self._done - 1) * 4 // self._total
        if quarter == before or quarter >= 4 or now - self._last_line < PLAIN_EVERY_S:
            return False
        self._last_line = now
        return True

    def _plain_line(self, loss: str) -> str:
        elapsed = time.monotonic() - self._started
        left = elapsed / self._done * (self._total - self._done)
        parts = [f"{self._done}/{self._total} {self._unit}", f"about {_seconds(left)} left"]
        return ", ".join(parts + ([loss] if loss else []))


def _live_bar(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
        console=console,
        transient=True,
        redirect_stdout=False,  # the libraries' output goes to the stage's log instead
        redirect_stderr=False,
    )


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"


# ---- the summary ----------------------------------------------------------------------


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The run's summary, like cargo's last lines: stages, gates, predicted against
    measured, artifacts."""
    console.print()
    console.print(_headline(summary))
    _print(console, _stages(summary["stages"]))
    if summary["gates"]:
        console.print("[bold]gates[/]")
        _print(console, _rows([_gate(g) for g in summary["gates"]]))
    if summary["predicted_vs_measured"]:
        console.print("[bold]predicted vs measured[/]")
        _print(console, _rows([_versus(r) for r in summary["predicted_vs_measured"]]))
    if summary["artifacts"]:
        console.print("[bold]artifacts[/]")
        rows = [[escape(k), escape(v)] for k, v in summary["artifacts"].items()]
        _print(console, _rows(rows))


def _print(console: Console, grid: Table) -> None:
    """A grid; piped, without the spaces that pad its last column (plain text then)."""
    if console.is_terminal:
        console.print(grid)
        return
    with console.capture() as captured:
        console.print(grid)
    console.out("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _headline(summary: dict[str, Any]) -> str:
    stages = summary["stages"]
    if summary["dry_run"]:
        planned = sum(s["status"] == "would run" for s in stages)
        if not planned:
            return "[bold]plan[/]: nothing would run; every stage is unchanged"
        return f"[bold]plan[/]: {planned} of {len(stages)} stages would run"
    ran = sum(s["status"] == "ran" for s in stages)
    cached = len(stages) - ran
    return (
        f"[bold]summary[/]: {ran} ran, {cached} cached in {_seconds(summary['wall_s'])} "
        f"({escape(summary['build_dir'])})"
    )


def _stages(stages: list[dict[str, Any]]) -> Table:
    rows = []
    for s in stages:
        style = {"ran": "green", "would run": "yellow"}.get(s["status"], "dim")
        time_shown = _seconds(s["wall_s"]) if "wall_s" in s else ""
        rows.append([escape(s["stage"]), f"[{style}]{s['status']}[/]", time_shown,
                     escape(s["reason"])])  # fmt: skip
        shown = _metrics_text(s.get("metrics") or {})
        if shown:
            rows.append(["", "", "", f"[dim]{escape(shown)}[/]"])
    return _rows(rows)


def _metrics_text(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            items = ", ".join(f"{k} {_number(v)}" for k, v in value.items())
            parts.append(f"{key}: {items}")
        elif value is not None:
            parts.append(f"{key} {_number(value)}")
    return " · ".join(parts)


def _gate(gate: dict[str, Any]) -> list[str]:
    verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]"}.get(
        gate["passed"], "[yellow]not measured[/]"
    )
    interval = ""
    if gate.get("ci_low") is not None and gate.get("ci_high") is not None:
        level = f" at {gate['confidence']:.0%}" if gate.get("confidence") else ""
        interval = f" [{_number(gate['ci_low'])}, {_number(gate['ci_high'])}]{level}"
    measured = _number(gate["measured"]) if gate["measured"] is not None else "-"
    text = f"{gate['metric']} {measured}{interval} {gate['op']} {_number(gate['bound'])}"
    where = f"line {gate['line']}" if gate.get("line") else ""
    return [escape(gate["stage"]), where, escape(text), verdict]


def _versus(row: dict[str, Any]) -> list[str]:
    predicted = _number(row["predicted"]) if row.get("predicted") is not None else "-"
    measured = _number(row["measured"]) if row.get("measured") is not None else "-"
    return [escape(row["stage"]), escape(row["what"]), f"measured {measured}",
            f"predicted {predicted}"]  # fmt: skip


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    shown = f"{value:.4g}"
    return str(int(value)) if "e" in shown and value.is_integer() and abs(value) < 1e15 else shown


def _rows(rows: list[list[str]]) -> Table:
    """Aligned columns without borders, indented under their heading."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(width=0)  # the indent
    for _ in range(max((len(r) for r in rows), default=0)):
        grid.add_column()
    for row in rows:
        grid.add_row("", *row)
    return grid

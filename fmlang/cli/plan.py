"""`fmc plan`: like `terraform plan`, what would run and what the solver chose."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from fmlang.verify.report import VerifyReport
from fmlang.verify.units import show

if TYPE_CHECKING:
    from rich.table import Table


def print_plan(report: VerifyReport, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return
    from rich.table import Table

    from fmlang.cli.console import console as make_console

    console = make_console()
    stages = Table(title="stages", title_justify="left")
    for column in ("stage", "chosen knobs", "estimates"):
        stages.add_column(column)
    for stage in report.stages:
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(stage.get("knobs", {}).items()))
        estimates = ", ".join(f"{k} {v}" for k, v in sorted(stage.get("estimates", {}).items()))
        stages.add_row(stage["stage"], knobs or "-", estimates or "-")
    console.print(stages)
    for stage in report.stages:
        if "memory" in stage:
            console.print(memory_table(stage["stage"], stage["memory"]))
    constraints = Table(title="constraints", title_justify="left")
    for column in ("line", "target", "constraint", "bound", "estimate", "verdict"):
        constraints.add_column(column)
    for row in report.constraints:
        verdict = row["verdict"] + (" (binding)" if row.get("binding") else "")
        what = row["kind"] if row["kind"] == row["metric"] else f"{row['kind']} {row['metric']}"
        constraints.add_row(
            str(row["line"]),
            row["target"],
            what,
            str(row["bound"]),
            row.get("estimate_text", "-"),
            verdict,
        )
    console.print(constraints)
    for selection in report.selections:
        console.print(selection_table(selection))
    status = "feasible" if report.feasible else "infeasible"
    console.print(f"[bold {'green' if report.feasible else 'red'}]{status}[/]")


def selection_table(selection: dict[str, Any]) -> Table:
    """`base auto in [...]` / `adapter auto in [...]`: the candidates `fmc run` trains
    (smallest first) and the ones the static constraints dropped, with the reason."""
    from rich.table import Table

    best = "lowest" if selection["lowest_wins"] else "highest"
    title = (f"{selection['model']}: candidates, picked by the {best} {selection['select_by']} "
             f"on {selection['on']}")  # fmt: skip
    table = Table(title=title, title_justify="left")
    for column in ("candidate", "base", "adapter", "params", "verdict"):
        table.add_column(column)
    for kept in selection["candidates"]:
        params = f"{kept['params']:,}" if kept["params"] else "-"
        table.add_row(*_candidate_cells(kept), params, f"[green]trained[/] as `{kept['model']}`")
    for gone in selection["dropped"]:
        why = "; ".join(m["text"] for m in gone["misses"])
        table.add_row(*_candidate_cells(gone), "-", f"[red]dropped[/]: {why}")
    return table


def _candidate_cells(candidate: dict[str, Any]) -> tuple[str, str, str]:
    key = str(candidate.get("candidate") or candidate["base"])
    return key, str(candidate["base"]), str(candidate.get("adapter") or "-")


def memory_table(stage: str, memory: dict[str, Any]) -> Table:
    """One training stage's memory per device, term by term, largest first."""
    from rich.table import Table

    devices = memory["devices"]
    where = f"{memory['hardware']}" + (f", each of {devices} devices" if devices > 1 else "")
    table = Table(title=f"{stage} memory per device ({where})", title_justify="left")
    table.add_column("term")
    table.add_column("bytes", justify="right")
    terms = sorted(memory["per_device"].items(), key=lambda kv: kv[1], reverse=True)
    for term, value in terms:
        table.add_row(term, show(value, "bytes"))
    for phase, value in memory["phases"].items():
        marker = " (peak)" if phase == memory["peak_phase"] else ""
        table.add_row(f"[dim]phase: {phase}{marker}[/]", f"[dim]{show(value, 'bytes')}[/]")
    verdict = "fits" if memory["fits"] else "does not fit"
    table.add_row(
        f"[bold]peak, {verdict}[/]",
        f"[bold]{show(memory['peak'], 'bytes')} / {show(memory['capacity'], 'bytes')}[/]",
    )
    for term, value in memory["host"].items():
        table.add_row(f"host: {term}", show(value, "bytes"))
    return table

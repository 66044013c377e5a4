"""`fmc plan`: like `terraform plan`, what would run and what the solver chose."""

from __future__ import annotations

import json

import click

from fmlang.verify.report import VerifyReport


def print_plan(report: VerifyReport, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    stages = Table(title="stages", title_justify="left")
    for column in ("stage", "chosen knobs", "estimates"):
        stages.add_column(column)
    for stage in report.stages:
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(stage.get("knobs", {}).items()))
        estimates = ", ".join(f"{k} {v}" for k, v in sorted(stage.get("estimates", {}).items()))
        stages.add_row(stage["stage"], knobs or "-", estimates or "-")
    console.print(stages)
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
    status = "feasible" if report.feasible else "infeasible"
    console.print(f"[bold {'green' if report.feasible else 'red'}]{status}[/]")

"""`fmc log` and `fmc diff`: the adapter registry's versions, and how two versions differ
(settings, metrics side by side, per-module weight updates). The lead registers
`log_command` and `diff_command` on the `fmc` group; heavy imports happen inside them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from fmlang.backends.merge import LayerDelta
    from fmlang.backends.registry import Registry, Version
    from fmlang.diagnostics import Diagnostic

OUTPUT = click.Choice(["rich", "json"])
HIDDEN_IN_DIFF = ("metrics", "seq", "created", "schema_version")


def build_dir_of(path: Path) -> Path:
    """A build folder as given, or `.fm-build/<stem>` for a spec file (as `fmc build`)."""
    if path.suffix == ".fm" and not path.is_dir():
        return Path(".fm-build") / path.stem
    return path


def _fail(diagnostics: list[Diagnostic], fmt: str) -> int:
    """Print the diagnostics (JSON on stdout, short lines with notes on stderr); exit 2
    when each is an I/O problem, else 1."""
    from fmlang.diagnostics import render
    from fmlang.diagnostics.codes import is_io

    if fmt == "json":
        click.echo(render.to_json(diagnostics))
    else:
        for d in diagnostics:
            lines = [render.short(d), *(f"  = note: {n}" for n in d.notes)]
            lines += [f"  = help: {d.help}"] if d.help else []
            click.echo("\n".join(lines), err=True)
    return 2 if all(is_io(d.code) for d in diagnostics) else 1


def _open(path: str) -> Registry:
    from fmlang.backends.registry import open_registry

    return open_registry(build_dir_of(Path(path)))


# ---- fmc log ------------------------------------------------------------------------


@click.command("log")
@click.argument("spec_or_build_dir", type=click.Path())
@click.option("--name", default=None, help="only the versions of this model or merge")
@click.option("--format", "fmt", type=OUTPUT, default="rich", show_default=True)
def log_command(spec_or_build_dir: str, name: str | None, fmt: str) -> None:
    """List the registered adapter versions of a build (a spec file or its build folder)."""
    from fmlang.errors import StageError

    try:
        registry = _open(spec_or_build_dir)
        versions = registry.versions(name)
        if name is not None and not versions:
            registry.resolve(name)  # no such name: FM0849 with a suggestion
    except StageError as exc:
        sys.exit(_fail(exc.diagnostics, fmt))
    if fmt == "json":
        click.echo(json.dumps({"versions": [v.to_json() for v in versions]}, indent=2))
    else:
        _print_log(versions)
    sys.exit(0)


def _cell_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())) or "-"


def _cell_data(hashes: dict[str, str]) -> str:
    if not hashes:
        return "-"
    first = sorted(hashes.values())[0].removeprefix("sha256:")[:12]
    return first + (f" (+{len(hashes) - 1})" if len(hashes) > 1 else "")


def _print_log(versions: list[Version]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered adapters", title_justify="left")
    for column in ("version", "ref", "parents", "data", "metrics", "created"):
        table.add_column(column, overflow="fold", no_wrap=column in ("version", "created"))
    for v in versions:
        parents = ", ".join(p[:12] for p in v.lineage.parents) or "-"
        table.add_row(
            v.short,
            v.ref,
            parents,
            _cell_data(v.lineage.data_hashes),
            _cell_metrics(v.lineage.metrics),
            v.lineage.created or "-",
        )
    Console(highlight=False).print(table)


# ---- fmc diff -----------------------------------------------------------------------


@click.command("diff")
@click.argument("spec_or_build_dir", type=click.Path())
@click.argument("a")
@click.argument("b")
@click.option("--format", "fmt", type=OUTPUT, default="rich", show_default=True)
@click.option(
    "--weights/--no-weights",
    default=True,
    show_default=True,
    help="compare the weight updates module by module (loads torch)",
)
def diff_command(spec_or_build_dir: str, a: str, b: str, fmt: str, weights: bool) -> None:
    """Compare versions A and B (hash prefix, name or name@N): settings, metrics, weights."""
    from fmlang.errors import StageError

    try:
        registry = _open(spec_or_build_dir)
        first, second = registry.resolve(a), registry.resolve(b)
    except StageError as exc:
        sys.exit(_fail(exc.diagnostics, fmt))
    document = diff_document(first, second, weights)
    if fmt == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        _print_diff(document)
    sys.exit(0)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def settings_diff(first: Version, second: Version) -> list[dict[str, Any]]:
    """Each lineage entry (dotted key) whose values differ; metrics are compared apart."""
    keep = {k: v for k, v in first.lineage.to_json().items() if k not in HIDDEN_IN_DIFF}
    other = {k: v for k, v in second.lineage.to_json().items() if k not in HIDDEN_IN_DIFF}
    flat_a, flat_b = _flatten(keep), _flatten(other)
    return [
        {"key": key, "a": flat_a.get(key), "b": flat_b.get(key)}
        for key in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(key) != flat_b.get(key)
    ]


def metrics_diff(first: Version, second: Version) -> list[dict[str, Any]]:
    """Every metric of either version, side by side; `delta` is B - A where both have it."""
    ma, mb = first.lineage.metrics, second.lineage.metrics
    return [
        {
            "name": name,
            "a": ma.get(name),
            "b": mb.get(name),
            "delta": mb[name] - ma[name] if name in ma and name in mb else None,
        }
        for name in sorted(set(ma) | set(mb))
    ]


def diff_document(first: Version, second: Version, weights: bool = True) -> dict[str, Any]:
    """The whole comparison, as `fmc diff --format json` prints it."""
    from importlib.util import find_spec

    rows: list[LayerDelta] | None = None
    if weights and find_spec("torch") is None:  # an extra: settings and metrics still compare
        click.echo("note: weights not compared: pip install 'fmlang[train]'", err=True)
    elif weights:
        from fmlang.backends.merge import weight_deltas

        rows = weight_deltas(first.path, second.path)
    return {
        "a": {"hash": first.hash, "ref": first.ref},
        "b": {"hash": second.hash, "ref": second.ref},
        "settings": settings_diff(first, second),
        "metrics": metrics_diff(first, second),
        "weights": None if rows is None else [row.to_json() for row in rows],
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _print_diff(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    a, b = document["a"], document["b"]
    console.print(f"A = {a['hash'][:12]} ({a['ref']})   B = {b['hash'][:12]} ({b['ref']})")
    settings = Table(title="settings that differ", title_justify="left")
    for column in ("setting", "A", "B"):
        settings.add_column(column, overflow="fold")
    for row in document["settings"]:
        settings.add_row(row["key"], json.dumps(row["a"]), json.dumps(row["b"]))
    console.print(settings if document["settings"] else "settings: the same")
    metrics = Table(title="metrics", title_justify="left")
    for column in ("metric", "A", "B", "B - A"):
        metrics.add_column(column, justify="right" if column != "metric" else "left")
    for row in document["metrics"]:
        metrics.add_row(row["name"], _num(row["a"]), _num(row["b"]), _num(row["delta"]))
    console.print(metrics if document["metrics"] else "metrics: none recorded")
    if document["weights"] is not None:
        console.print(_weights_table(document["weights"]))


def _weights_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="weight updates (Frobenius norms; LoRA: ΔW = B·A·scale)")
    for column in ("module", "kind", "|A|", "|B|", "|A - B|", "relative", "note"):
        left = column in ("module", "kind", "note")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            row["kind"],
            _num(row["norm_a"]),
            _num(row["norm_b"]),
            _num(row["diff"]),
            _num(row["relative"]),
            row["note"],
        )
    return table

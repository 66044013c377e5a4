"""`fmc log`, `fmc diff`, `fmc tag` and `fmc rollback`: the adapter registry's versions (with
their gates, tags and which one is served), how two versions differ (settings side by side,
data, metrics with deltas, gates, per-layer weight deltas), and the pointers that say what
ships. The lead registers the commands on the `fmc` group. None of them imports torch:
weights are compared with numpy (`fmlang/backends/weight_diff.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from fmlang.backends.registry import Registry, Version
    from fmlang.diagnostics import Diagnostic

OUTPUT = click.Choice(["rich", "json"])
# lineage entries `settings` leaves out: compared in their own sections, or bookkeeping
HIDDEN_IN_DIFF = ("metrics", "seq", "created", "schema_version", "gates", "gates_passed",
                  "data_hashes", "data_rows")  # fmt: skip
# what people call the settings that change most (key in the flattened lineage → label)
LABELS = {
    "base_model.name": "base model",
    "base_model.source": "base weights",
    "base_model.revision": "base revision",
    "settings.peft_type": "adapter",
    "settings.r": "rank",
    "settings.lora_alpha": "alpha",
    "settings.lora_dropout": "dropout",
    "settings.target_modules": "targets",
    "settings.density": "density",
    "settings.method": "method",
    "settings.weights": "weights",
    "training.num_train_epochs": "epochs",
    "training.max_steps": "max steps",
    "training.learning_rate": "lr",
    "training.per_device_train_batch_size": "batch",
    "training.gradient_accumulation_steps": "grad accumulation",
    "training.weight_decay": "weight decay",
    "training.warmup_steps": "warmup steps",
    "training.seed": "seed",
    "training.max_seq": "max_seq",
}
LAST = ("parents", "rebased_from", "inputs_hash", "spec_hash")  # hashes: after what they mean


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
    """List the registered adapter versions of a build (a spec file or its build folder):
    lineage, metrics, gates, tags, and which version `fmc serve` serves."""
    from fmlang.errors import StageError

    try:
        registry = _open(spec_or_build_dir)
        versions = registry.versions(name)
        if name is not None and not versions:
            registry.resolve(name)  # no such name: FM0849 with a suggestion
        marks = _marks(registry, versions)
    except StageError as exc:
        sys.exit(_fail(exc.diagnostics, fmt))
    if fmt == "json":
        listed = [v.to_json() | marks[v.hash] for v in versions]
        click.echo(json.dumps({"versions": listed}, indent=2))
    else:
        _print_log(versions, marks)
    sys.exit(0)


def _marks(registry: Registry, versions: list[Version]) -> dict[str, dict[str, Any]]:
    """Per hash: its tags, whether it is its name's `current` pointer, and whether `fmc
    serve` would serve it now (without flags)."""
    from fmlang.backends.release import serving_now, tags_of

    tags, current = tags_of(registry), registry.pointers("current")
    served = {n: serving_now(registry, n) for n in {v.name for v in versions}}
    return {
        v.hash: {
            "tags": tags.get(v.hash, []),
            "current": current.get(v.name) == v.hash,
            "serving": (served[v.name] or v).hash == v.hash and served[v.name] is not None,
        }
        for v in versions
    }


def _cell_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())) or "-"


def _cell_data(hashes: dict[str, str]) -> str:
    if not hashes:
        return "-"
    first = sorted(hashes.values())[0].removeprefix("sha256:")[:12]
    return first + (f" (+{len(hashes) - 1})" if len(hashes) > 1 else "")


def _cell_gates(version: Version) -> str:
    from rich.markup import escape

    from fmlang.backends.release import gate_summary

    text = escape(gate_summary(version))
    if version.lineage.gates_passed is False:
        return f"[red]{text}[/]"
    return f"[green]{text}[/]" if version.lineage.gates_passed else text


def _cell_ref(version: Version, marks: dict[str, Any]) -> str:
    from rich.markup import escape

    lines = [version.ref, *(f"[cyan]tag {escape(t)}[/]" for t in marks["tags"])]
    if version.lineage.kind == "merge":
        lines.append("[dim]merge[/]")
    lines += ["[bold]current[/]"] if marks["current"] else []
    lines += ["[bold green]serving[/]"] if marks["serving"] else []
    lines += ["[yellow]superseded[/]"] if version.lineage.superseded else []
    return "\n".join(lines)


def _print_log(versions: list[Version], marks: dict[str, dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from fmlang.cli.console import console as make_console

    by_hash = {v.hash: v for v in versions}
    table = Table(title="registered adapters", title_justify="left")
    for column in ("version", "ref", "parents", "data", "metrics", "gates", "created"):
        table.add_column(column, overflow="fold", no_wrap=column in ("version", "created"))
    for v in versions:
        parents = ", ".join(by_hash[p].ref if p in by_hash else p[:12] for p in v.lineage.parents)
        table.add_row(
            v.short,
            _cell_ref(v, marks[v.hash]),
            parents or "-",
            _cell_data(v.lineage.data_hashes),
            _cell_metrics(v.lineage.metrics),
            _cell_gates(v),
            v.lineage.created or "-",
        )
    console = make_console()
    console.print(table)
    for v in versions:
        if v.lineage.superseded:  # not served: why
            console.print(f"{v.ref} is superseded: {escape(v.lineage.superseded)}")


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
    help="compare the weight updates module by module",
)
def diff_command(spec_or_build_dir: str, a: str, b: str, fmt: str, weights: bool) -> None:
    """Compare versions A and B (hash prefix, name, name@N or tag): settings side by side,
    data, metrics with deltas, gates, and per-layer weight deltas."""
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


def _setting_order(key: str) -> tuple[int, int, str]:
    if key in LABELS:
        return (0, list(LABELS).index(key), key)
    return (2 if key.split(".")[0] in LAST else 1, 0, key)


def settings_diff(first: Version, second: Version) -> list[dict[str, Any]]:
    """Each lineage entry (dotted key, and the name people use for it) whose values differ:
    the common settings first (rank, epochs, lr, ...), hashes last; data, metrics and gates
    are compared apart."""
    keep = {k: v for k, v in first.lineage.to_json().items() if k not in HIDDEN_IN_DIFF}
    other = {k: v for k, v in second.lineage.to_json().items() if k not in HIDDEN_IN_DIFF}
    flat_a, flat_b = _flatten(keep), _flatten(other)
    changed = [k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k)]
    return [
        {"key": key, "label": LABELS.get(key, key), "a": flat_a.get(key), "b": flat_b.get(key)}
        for key in sorted(changed, key=_setting_order)
    ]


def data_diff(first: Version, second: Version) -> dict[str, list[dict[str, Any]]]:
    """The data each version was built from (the data and labels stages' keys, side by
    side) and the rows of each split it trained and was evaluated on."""
    ha, hb = first.lineage.data_hashes, second.lineage.data_hashes
    ra, rb = first.lineage.data_rows, second.lineage.data_rows
    return {
        "hashes": [
            {"stage": s, "a": ha.get(s), "b": hb.get(s), "same": ha.get(s) == hb.get(s)}
            for s in sorted(set(ha) | set(hb))
        ],
        "rows": [
            {
                "split": s,
                "a": ra.get(s),
                "b": rb.get(s),
                "delta": rb[s] - ra[s] if s in ra and s in rb else None,
            }
            for s in sorted(set(ra) | set(rb))
        ],
    }


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


def _gate_key(gate: dict[str, Any]) -> str:
    return f"{gate.get('metric')} {gate.get('op')} {gate.get('bound')}"


def gates_diff(first: Version, second: Version) -> list[dict[str, Any]]:
    """Each runtime gate of either version (by metric, operator and bound), with what each
    measured and whether it passed."""
    ga = {_gate_key(g): g for g in first.lineage.gates}
    gb = {_gate_key(g): g for g in second.lineage.gates}

    def side(gate: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if gate is None else {k: gate.get(k) for k in ("measured", "passed", "line")}

    rows = []
    for key in sorted(set(ga) | set(gb)):
        gate = ga.get(key) or gb[key]
        rows.append({"gate": key, "metric": gate.get("metric"), "op": gate.get("op"),
                     "bound": gate.get("bound"), "a": side(ga.get(key)),
                     "b": side(gb.get(key))})  # fmt: skip
    return rows


def diff_document(first: Version, second: Version, weights: bool = True) -> dict[str, Any]:
    """The whole comparison, as `fmc diff --format json` prints it."""
    from fmlang.backends.weight_diff import weight_deltas

    rows: list[dict[str, Any]] | None = None
    note = None if weights else "not compared (--no-weights)"
    if weights:
        try:
            rows = weight_deltas(first.path, second.path)
        except (OSError, ValueError, KeyError) as exc:
            note = f"not compared: {exc}"

    def side(v: Version) -> dict[str, Any]:
        lineage = v.lineage
        return {"hash": v.hash, "ref": v.ref, "kind": lineage.kind,
                "gates_passed": lineage.gates_passed, "superseded": lineage.superseded}  # fmt: skip

    return {
        "a": side(first),
        "b": side(second),
        "settings": settings_diff(first, second),
        "data": data_diff(first, second),
        "metrics": metrics_diff(first, second),
        "gates": gates_diff(first, second),
        "weights": rows,
        "weights_note": note,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def value_text(value: Any) -> str:
    """A setting as people write it: `4` for 4.0, `0.0003`, `q_proj, v_proj`, `-`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value) or "[]"
    if isinstance(value, str) and value.startswith("sha256:"):
        return value.removeprefix("sha256:")[:12]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def settings_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`epochs      4 → 15`: one line per setting that differs."""
    width = max((len(r["label"]) for r in rows), default=0)
    return [f"  {r['label']:<{width}}  {value_text(r['a'])} → {value_text(r['b'])}" for r in rows]


def _print_diff(document: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from fmlang.cli.console import console as make_console

    console = make_console()
    a, b = document["a"], document["b"]
    console.print(f"A = {a['hash'][:12]} ({a['ref']})   B = {b['hash'][:12]} ({b['ref']})")
    if document["settings"]:
        console.print("settings (A → B):")
        console.print(escape("\n".join(settings_lines(document["settings"]))))
    else:
        console.print("settings: the same")
    console.print(_data_table(document["data"]))
    metrics = Table(title="metrics", title_justify="left")
    for column in ("metric", "A", "B", "B - A"):
        metrics.add_column(column, justify="right" if column != "metric" else "left")
    for row in document["metrics"]:
        metrics.add_row(row["name"], _num(row["a"]), _num(row["b"]), _num(row["delta"]))
    console.print(metrics if document["metrics"] else "metrics: none recorded")
    console.print(_gates_table(document["gates"]) if document["gates"] else "gates: none")
    if document["weights"] is not None:
        console.print(_weights_table(document["weights"]))
    else:
        console.print(f"weights: {escape(document['weights_note'] or '')}")


def _data_table(data: dict[str, list[dict[str, Any]]]) -> Any:
    from rich.table import Table

    table = Table(title="data", title_justify="left")
    for column in ("stage or split", "A", "B", ""):
        table.add_column(column, overflow="fold")
    for row in data["hashes"]:
        same = "same" if row["same"] else "[yellow]changed[/]"
        table.add_row(row["stage"], value_text(row["a"])[:12], value_text(row["b"])[:12], same)
    for row in data["rows"]:
        delta = "" if row["delta"] is None else f"{row['delta']:+d} rows"
        table.add_row(f"rows: {row['split']}", value_text(row["a"]), value_text(row["b"]), delta)
    return table


def _gate_cell(side: dict[str, Any] | None) -> str:
    if side is None:
        return "-"
    verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]not measured[/]"}
    return f"{_num(side['measured'])} {verdict[side['passed']]}"


def _gates_table(rows: list[dict[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="gates", title_justify="left")
    for column in ("gate", "A", "B"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row["gate"]), _gate_cell(row["a"]), _gate_cell(row["b"]))
    return table


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


# ---- fmc tag / fmc rollback -----------------------------------------------------------


@click.command("tag")
@click.argument("spec_or_build_dir", type=click.Path())
@click.argument("ref")
@click.argument("tag")
@click.option("--format", "fmt", type=OUTPUT, default="rich", show_default=True)
def tag_command(spec_or_build_dir: str, ref: str, tag: str, fmt: str) -> None:
    """Name version REF (hash prefix, name@N or tag) TAG, moving TAG if it named another;
    TAG then works wherever a version is named (`fmc serve --version TAG`)."""
    from fmlang.backends.release import tag as set_tag
    from fmlang.errors import StageError

    try:
        version = set_tag(_open(spec_or_build_dir), ref, tag)
    except StageError as exc:
        sys.exit(_fail(exc.diagnostics, fmt))
    if fmt == "json":
        click.echo(json.dumps({"tag": tag, "hash": version.hash, "ref": version.ref}))
    else:
        click.echo(f"tagged {version.ref} ({version.short}) `{tag}`")
    sys.exit(0)


@click.command("rollback")
@click.argument("spec_or_build_dir", type=click.Path())
@click.argument("name")
@click.option("--to", "to", default=None, metavar="REF",
              help="the version to serve (default: the previous passing one)")  # fmt: skip
@click.option("--clear", is_flag=True, default=False,
              help="remove the pointer: serve the newest passing version again")  # fmt: skip
@click.option("--allow-failed-gates", is_flag=True, default=False,
              help="point at a version whose runtime gates failed")  # fmt: skip
@click.option("--format", "fmt", type=OUTPUT, default="rich", show_default=True)
def rollback_command(spec_or_build_dir: str, name: str, to: str | None, clear: bool,
                     allow_failed_gates: bool, fmt: str) -> None:  # fmt: skip
    """Point NAME's `current` version (what `fmc serve` serves) back to the passing version
    before the one served now, or to --to REF; --clear removes the pointer."""
    from fmlang.backends.release import clear_current, rollback
    from fmlang.errors import StageError

    if clear and to is not None:
        raise click.UsageError("--clear removes the pointer; --to sets it: give one")
    try:
        registry = _open(spec_or_build_dir)
        if clear:
            before, now = None, clear_current(registry, name)
        else:
            before, now = rollback(registry, name, to, allow_failed_gates)
    except StageError as exc:
        sys.exit(_fail(exc.diagnostics, fmt))
    if fmt == "json":
        refs = {k: v.ref if v else None for k, v in (("before", before), ("now", now))}
        click.echo(json.dumps({"name": name, "cleared": clear, **refs}))
    elif clear:
        served = f"{now.ref} ({now.short})" if now else "nothing (no passing version)"
        click.echo(f"{name}: no current pointer; `fmc serve` serves {served}")
    else:
        assert now is not None
        was = f"{before.ref} ({before.short})" if before else "nothing"
        click.echo(f"{name}: current {was} → {now.ref} ({now.short}); `fmc serve` serves it")
    sys.exit(0)

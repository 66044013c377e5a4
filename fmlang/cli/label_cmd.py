"""`fmc label`: tools for labels blocks. `fmc label suggest` writes labeling functions
learned from a gold-labelled sample as a reviewable `.fm` file. Heavy imports inside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fmlang.api import CheckResult
    from fmlang.syntax import ast


@click.group()
def label() -> None:
    """Work with labels blocks: suggest labeling functions from gold labels."""


@label.command()
@click.argument("file", type=click.Path())
@click.argument("labels_name", metavar="LABELS")
@click.option("--sample", default=50, show_default=True, type=click.IntRange(4, 100_000),
              help="gold-labelled rows to learn from, in two halves that must agree")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="which rows the sample draws")  # fmt: skip
@click.option("--per-class", default=10, show_default=True, type=click.IntRange(1, 100),
              help="the most functions suggested for each class")  # fmt: skip
@click.option("--min-support", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="the fewest sample rows a function must fire on")  # fmt: skip
@click.option("--column", default=None, help="the text column (default: the one the block's "
              "functions read most, else the first `text` column)")  # fmt: skip
@click.option("-o", "--out", "out_file", type=click.Path(), default=None,
              help="the .fm file to write (default: FILE.LABELS.suggested.fm)")  # fmt: skip
@click.option("--build", "build_dir", type=click.Path(), default=None,
              help="build folder (default: .fm-build/<spec name>)")  # fmt: skip
@click.option("--as", "principal", default=None, metavar="PRINCIPAL",
              help="who runs this, checked against grants (default: $FMC_PRINCIPAL)")  # fmt: skip
@click.option("--propose-with", "propose_with", default=None, metavar="MODEL",
              help="a local generative model (a folder, or a hub id already downloaded) that "
              "proposes keywords too; each must still earn its precision on the data")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["rich", "short", "json"]), default="rich")
def suggest(file: str, labels_name: str, sample: int, seed: int, per_class: int,
            min_support: int, column: str | None, out_file: str | None, build_dir: str | None,
            principal: str | None, propose_with: str | None, fmt: str) -> None:  # fmt: skip
    """Suggest labeling functions for LABELS in FILE from gold-labelled rows.

    Runs FILE's data stage (cached), draws --sample rows with a gold label from the data the
    block labels, and proposes keyword, regex and length functions that are accurate on
    the sample and on each of its halves, cover many rows and overlap little. A second
    round estimates each candidate's precision on every row through the functions the
    first chose, and restricts candidates to the rows without another class's marks.
    Writes them, with their measured accuracy and coverage as comments, to a .fm file that
    imports FILE: review it, keep what you trust. Deterministic; no network, and no model
    unless --propose-with names one."""
    from fmlang.api import check_paths, compile_spec
    from fmlang.atomic import write_text_atomic
    from fmlang.backends.data.identity import establish
    from fmlang.backends.labelsuggest.source import block_name, render
    from fmlang.backends.labelsuggest.suggest import Settings
    from fmlang.backends.labelsuggest.suggest import suggest as suggest_functions
    from fmlang.backends.run import RunOptions
    from fmlang.backends.run import run as run_stages
    from fmlang.backends.run_lock import exclusive
    from fmlang.cli.main import report
    from fmlang.cli.run_cmd import _build_if_stale, render_stage_error
    from fmlang.errors import StageError

    spec_path = Path(file)
    result = check_paths([spec_path], verify=True, data=True)
    if not result.ok:
        sys.exit(report(result, fmt, quiet_ok=True))
    spec = compile_spec(result)
    labels = spec.labels_block(labels_name)
    node = _labels_node(result, labels_name)
    if labels is None or node is None:
        names = ", ".join(f"`{lb.name}`" for lb in spec.labels) or "none"
        click.echo(f"error[FM0001]: no labels block `{labels_name}` in {file} (it has: {names})",
                   err=True)  # fmt: skip
        sys.exit(2)
    text_column = column or _text_column(spec, labels)
    if text_column is None:
        click.echo(f"error[FM0001]: labels `{labels_name}` read no text column: pass --column",
                   err=True)  # fmt: skip
        sys.exit(2)
    target = Path(build_dir) if build_dir else Path(".fm-build") / spec_path.stem
    out = Path(out_file) if out_file else spec_path.with_name(
        f"{spec_path.stem}.{labels_name}.suggested.fm")  # fmt: skip
    text = "".join(s.text for s in result.program.files.values())
    options = RunOptions(target, spec_path, "data", establish(principal), log=lambda _: None)
    settings = Settings(sample, seed, per_class, min_support, propose_with)
    try:
        with exclusive(target, False):
            _build_if_stale(result, target, lambda _: None)
            _, ctx = run_stages(spec, options, text)
            suggestion = suggest_functions(ctx, labels, text_column, settings)
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, fmt))
    taken = [*(d.name for d in spec.datasets), *(lb.name for lb in spec.labels),
             *(m.name for m in spec.models), *(g.name for g in spec.merges)]  # fmt: skip
    kept = _kept_statements(result, node)
    declared = {name for scope in result.program.scopes.values() for name in scope}
    source = render(suggestion, spec_path, out, kept, block_name(labels_name, taken),
                    taken=declared | set(taken))  # fmt: skip
    write_text_atomic(out, source)
    checked = check_paths([out])
    if not checked.ok:  # what we wrote must check: a bug, said as such
        report(checked, fmt)
        sys.exit(101)
    click.echo(
        f"wrote {out}: {len(suggestion.chosen)} labeling functions from "
        f"{suggestion.candidates} candidates ({suggestion.fit_rows} + {suggestion.held_rows} "
        f"sample rows, coverage measured on {suggestion.rows:,} rows of `{labels.dataset}`)",
        err=True,
    )


def _labels_node(result: CheckResult, name: str) -> ast.Labels | None:
    from fmlang.syntax import ast

    for _, symbol in result.program.declarations("labels"):
        if isinstance(symbol.node, ast.Labels) and symbol.node.name.name == name:
            return symbol.node
    return None


def _kept_statements(result: CheckResult, node: ast.Labels) -> list[str]:
    """The block's statements other than `lf` and `classes`, as written."""
    from fmlang.syntax import ast

    source = next(f for f in result.program.files.values() if f.path == node.span.file)
    kept = []
    for stmt in node.body:
        if isinstance(stmt, ast.LabelingFunction):
            continue
        if isinstance(stmt, ast.Setting | ast.BlockSetting) and stmt.key.name == "classes":
            continue
        kept.append(source.text[stmt.span.start : stmt.span.end])
    return kept


def _text_column(spec: object, labels: object) -> str | None:
    from fmlang.ir.expr import columns_used
    from fmlang.ir.nodes import Labels, Spec

    assert isinstance(spec, Spec) and isinstance(labels, Labels)
    dataset = spec.dataset(labels.dataset)
    texts = [c.name for c in dataset.columns if c.type == "text"] if dataset else []
    uses = {name: 0 for name in texts}
    for lf in labels.functions:
        for name in columns_used(lf.expr) if lf.expr is not None else ():
            if name in uses:
                uses[name] += 1
    return max(texts, key=lambda n: (uses[n], -texts.index(n))) if texts else None

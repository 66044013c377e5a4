"""`fmc data`: tools for datasets. `fmc data review` shows what each cleaning rule removed or
changed and writes removals marked wrong back into the spec. Heavy imports inside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from fmlang.backends.data.review import RuleReview


@click.group()
def data() -> None:
    """Work with datasets: review what the cleaning rules did."""


@data.command()
@click.argument("file", type=click.Path())
@click.argument("dataset_name", metavar="DATASET")
@click.option("--samples", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="rows shown per rule")  # fmt: skip
@click.option("--keep", "keep", multiple=True, metavar="ID",
              help="a removed row (its @id value) to keep: written into FILE as an exception "
              "on the rule that removed it (repeatable)")  # fmt: skip
@click.option("--build", "build_dir", type=click.Path(), default=None,
              help="build folder (default: .fm-build/<spec name>)")  # fmt: skip
@click.option("--as", "principal", default=None, metavar="PRINCIPAL",
              help="who runs this, checked against grants (default: $FMC_PRINCIPAL)")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["rich", "short", "json"]), default="rich")
def review(file: str, dataset_name: str, samples: int, keep: tuple[str, ...],
           build_dir: str | None, principal: str | None, fmt: str) -> None:  # fmt: skip
    """Show what each cleaning rule of DATASET in FILE removed or changed.

    Per rule: samples of the rows it removed (for dedupe, with the row kept in their place
    and their similarity) or changed (before and after). With --keep ID, a row removed by a
    `drop where` or `keep where` rule becomes an exception on that rule, written into FILE
    for review; the next run keeps it."""
    from fmlang.api import check_paths, compile_spec
    from fmlang.backends.data.identity import establish
    from fmlang.backends.data.review import review as review_rules
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
    dataset = spec.dataset(dataset_name)
    if dataset is None or dataset.source is None:
        names = ", ".join(f"`{d.name}`" for d in spec.datasets) or "none"
        click.echo(f"error[FM0001]: no dataset `{dataset_name}` in {file} (it has: {names})",
                   err=True)  # fmt: skip
        sys.exit(2)
    target = Path(build_dir) if build_dir else Path(".fm-build") / spec_path.stem
    text = "".join(s.text for s in result.program.files.values())
    options = RunOptions(target, spec_path, "data", establish(principal), log=lambda _: None)
    try:
        with exclusive(target, False):
            _build_if_stale(result, target, lambda _: None)
            _, ctx = run_stages(spec, options, text)
            reviews = review_rules(ctx, dataset, samples, frozenset(keep))
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, fmt))
    for rule in reviews:
        _show(rule)
    if keep:
        _keep(result, spec_path, dataset_name, reviews, keep, fmt)


def _show(rule: RuleReview) -> None:
    where = f"line {rule.line}: " if rule.line else ""
    verb = "removed" if rule.removes else "changed"
    click.echo(f"{where}{rule.title}: {rule.total:,} rows {verb}")
    for change in rule.samples:
        who = f"[{change.key}] " if change.key is not None else ""
        if change.after is None:
            click.echo(f"  - {who}{_row(change.before)}")
            if change.kept is not None:
                click.echo(f"      similarity {change.similarity:.3f} to kept {_row(change.kept)}")
        else:
            for column, old in change.before.items():
                click.echo(f"  ~ {who}{column}: {_text(old)} -> {_text(change.after[column])}")
    if rule.total > len(rule.samples):
        click.echo(f"  … and {rule.total - len(rule.samples):,} more")


def _row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in row.items())


def _text(value: Any, limit: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _keep(result: Any, spec_path: Path, dataset_name: str, reviews: list[RuleReview],
          keys: tuple[str, ...], fmt: str) -> None:  # fmt: skip
    """Write each kept row as an exception on the filter rule that removed it, or raise the
    `near` threshold of the near-dedupe rule that removed it above the row's similarity."""
    from fmlang.backends.data.review import cannot_keep, keep_rows, raise_near, raised_threshold
    from fmlang.cli.main import report
    from fmlang.ir.nodes import Dedupe, FilterRows
    from fmlang.syntax import ast

    node = next(
        s.node for _, s in result.program.declarations("dataset")
        if isinstance(s.node, ast.Dataset) and s.node.name.name == dataset_name
    )  # fmt: skip
    source = next(f for f in result.program.files.values() if f.path == node.span.file)
    if Path(source.path).resolve() != spec_path.resolve():
        click.echo(f"error[FM0001]: dataset `{dataset_name}` is declared in {source.path}: "
                   "review it from that file", err=True)  # fmt: skip
        sys.exit(2)
    id_column = _id_column(node)
    if id_column is None:
        click.echo(f"error[FM0001]: dataset `{dataset_name}` has no @id column to name rows "
                   "by: tag one `@id` to keep rows", err=True)  # fmt: skip
        sys.exit(2)
    by_rule: dict[int, list[str]] = {}
    for key in keys:
        found = next((i for i, r in enumerate(reviews) if key in r.removed_keys), None)
        rule = reviews[found] if found is not None else None
        near = rule is not None and key in rule.nearest
        if near and rule is not None and raised_threshold(rule.nearest[key]) is None:
            near = False  # the same text as an earlier row: no threshold keeps it
        if found is None or rule is None or not (isinstance(rule.rule, FilterRows) or near):
            result.program.sink.add(cannot_keep(key, rule, node.name.span))
            sys.exit(report(result, fmt))
        by_rule.setdefault(found, []).append(key)
    text, said = source.text, []
    for index in sorted(by_rule, key=lambda i: -reviews[i].rule.span.line):  # bottom up
        rule, kept = reviews[index], by_rule[index]
        if isinstance(rule.rule, Dedupe):
            closest = max(rule.nearest[k] for k in kept)
            threshold = raised_threshold(closest)
            assert threshold is not None
            text = raise_near(text, node, rule.rule, threshold)
            said.append(f"raised `near` of line {rule.line} from {rule.rule.near:g} to "
                        f"{threshold:.3f} (above {closest:.3f}, the similarity of "
                        f"{', '.join(kept)} to its nearest earlier row): every pair of rows "
                        "that close is kept too")  # fmt: skip
        else:
            text = keep_rows(text, node, rule.rule, id_column, kept)
            said.append(f"{len(kept)} rows kept as exceptions on line {rule.line}")
    spec_path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {spec_path}: {'; '.join(said)}; review the change")


def _id_column(node: Any) -> str | None:
    from fmlang.syntax import ast

    for stmt in node.body:
        if isinstance(stmt, ast.Schema):
            for field in stmt.fields:
                if any(tag.name == "id" for tag in field.tags):
                    return str(field.name.name)
    return None

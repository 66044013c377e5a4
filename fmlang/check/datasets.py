"""Datasets: source, schema, cleaning rules, splits and grants; sources confined to the
project."""

from __future__ import annotations

from pathlib import Path

from fmlang.check import schema as s
from fmlang.check.context import Ctx
from fmlang.check.expressions import BOOL, COLUMN_TYPE, ExprChecker
from fmlang.check.program import Program
from fmlang.check.settings import check_body, setting
from fmlang.check.sources import check_source_files
from fmlang.check.split_files import check_file_split, check_split_files, is_file_split
from fmlang.diagnostics import Diagnostic, Label, Span, error
from fmlang.files import DATA_DIRS_ENV, DataRoots, Escape, read_pattern, source_escapes
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast


def split_names(dataset: ast.Dataset) -> list[str]:
    return [p.name.name for stmt in dataset.body if isinstance(stmt, ast.Split) for p in stmt.parts]


def columns_of(dataset: ast.Dataset) -> dict[str, str]:
    """Column name → expression type, as declared (before cleaning drops any)."""
    return {
        f.name.name: COLUMN_TYPE.get(f.type.name.name, "any")
        for stmt in dataset.body
        if isinstance(stmt, ast.Schema)
        for f in stmt.fields
    }


def live_columns(dataset: ast.Dataset) -> dict[str, str]:
    """The columns left after every `drop COLUMN` rule: what labels and models read."""
    live = columns_of(dataset)
    for stmt in dataset.body:
        if isinstance(stmt, ast.Clean):
            for rule in stmt.rules:
                if isinstance(rule, ast.DropColumns):
                    for column in rule.columns:
                        live.pop(column.name, None)
    return live


def check_datasets(program: Program) -> None:
    for source, symbol in program.declarations("dataset"):
        assert isinstance(symbol.node, ast.Dataset)
        _check_dataset(Ctx(program, source), symbol.node)


def _check_dataset(ctx: Ctx, dataset: ast.Dataset) -> None:
    check_body(ctx, dataset.body, s.DATASET, f"dataset `{dataset.name.name}`")
    if setting(dataset.body, "source") is None:
        ctx.error(
            "FM0316",
            f"dataset `{dataset.name.name}` has no `source`",
            dataset.name.span,
            "no source",
            'add `source csv("data/*.csv")` (or jsonl, parquet, files, hf_disk)',
        )
    schemas = [stmt for stmt in dataset.body if isinstance(stmt, ast.Schema)]
    if not schemas:
        ctx.error(
            "FM0317",
            f"dataset `{dataset.name.name}` has no `schema`",
            dataset.name.span,
            "no schema",
            "add `schema { column: type }` listing the columns you use",
        )
    for extra in schemas[1:]:
        ctx.error("FM0305", "a dataset has one `schema` block", extra.span, "second schema")
    source = setting(dataset.body, "source")
    call = source.value if isinstance(source, ast.Setting) else None
    kind = call.func.id if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else None
    for schema in schemas:
        _check_schema(ctx, schema, kind)
    columns = columns_of(dataset)
    live = dict(columns)
    for stmt in dataset.body:
        if isinstance(stmt, ast.Clean):
            for rule in stmt.rules:
                _check_rule(ctx, rule, live)
        elif isinstance(stmt, ast.Split):
            _check_split(ctx, stmt, columns)
        elif isinstance(stmt, ast.Grant):
            check_grant(ctx, stmt)


def _check_schema(ctx: Ctx, schema: ast.Schema, source_kind: str | None = None) -> None:
    seen: dict[str, ast.Ident] = {}
    for field in schema.fields:
        name = field.name
        if name.name in seen:
            ctx.report(
                error(
                    "FM0312",
                    f"column `{name.name}` is declared twice",
                    name.span,
                    "declared again",
                    related=(Label(seen[name.name].span, "first declared here", False),),
                )
            )
        seen[name.name] = name
        _check_type(ctx, field)
        _check_options(ctx, field, source_kind)
        for tag in field.tags:
            if tag.name not in s.COLUMN_TAGS:
                ctx.error(
                    "FM0311",
                    f"unknown tag `@{tag.name}`",
                    tag.span,
                    "unknown tag",
                    did_you_mean(tag.name, s.COLUMN_TAGS)
                    or f"tags: {', '.join('@' + t for t in s.COLUMN_TAGS)}",
                )
        if field.default is not None:
            _check_derived(
                ctx,
                field,
                {
                    n: COLUMN_TYPE.get(f.type.name.name, "any")
                    for n, f in ((f.name.name, f) for f in schema.fields)
                },
            )


def _check_type(ctx: Ctx, field: ast.Field) -> None:
    type_name = field.type.name
    if type_name.name not in s.COLUMN_TYPES:
        ctx.error(
            "FM0310",
            f"unknown column type `{type_name.name}`",
            type_name.span,
            "unknown type",
            did_you_mean(type_name.name, s.COLUMN_TYPES) or f"types: {', '.join(s.COLUMN_TYPES)}",
        )
    elif type_name.name in ("label", "category"):
        if type_name.name == "label" and not field.type.args:
            ctx.error(
                "FM0310",
                "a `label` column lists its classes",
                field.type.span,
                "no classes",
                f"write `{field.name.name}: label[ham, spam]`",
            )
    elif field.type.args:
        ctx.error(
            "FM0310",
            f"`{type_name.name}` takes no `[…]`",
            field.type.span,
            "unexpected classes",
            "only `label[…]` and `category[…]` list values",
        )


def _check_options(ctx: Ctx, field: ast.Field, source_kind: str | None) -> None:
    """`name: type { on_cast_error = …, from = "a.b" }`: options of a stored column."""
    if not field.options:
        return
    name = field.name.name
    check_body(ctx, field.options, s.COLUMN, f"column `{name}`")
    for option in field.options:
        key = option.key.name
        if key not in s.COLUMN:
            continue
        if field.default is not None:
            ctx.error(
                "FM0387",
                f"`{key}` applies to a column read from the source, and `{name}` is computed",
                option.key.span,
                "not read from the source",
                f"remove `{key}`, or the `= …` that computes the column",
            )
        elif key == "from" and isinstance(option, ast.Setting):
            path = option.value.value if isinstance(option.value, ast.String) else None
            if source_kind not in (None, "json", "jsonl"):
                ctx.error(
                    "FM0387",
                    f"`from` reads a field of a JSON record, and this source is `{source_kind}`",
                    option.key.span,
                    "not a JSON source",
                    "remove `from`, or read the data with `json(…)` or `jsonl(…)`",
                )
            elif path is not None and not all(
                part.isidentifier() or part.isdigit() for part in path.split(".")
            ):
                ctx.error(
                    "FM0387",
                    f"`{path}` is not a dotted field path",
                    option.value.span,
                    "not a path",
                    'write the field names joined by dots, e.g. `from = "data.text"`',
                )


def _check_derived(ctx: Ctx, field: ast.Field, columns: dict[str, str]) -> None:
    default = field.default
    if isinstance(default, ast.Name) and default.id in s.DERIVED_COLUMNS:
        return
    others = {k: v for k, v in columns.items() if k != field.name.name}
    ExprChecker(ctx, others, f"column `{field.name.name}`").infer(default)  # type: ignore[arg-type]


def _check_rule(ctx: Ctx, rule: ast.CleanRule, live: dict[str, str]) -> None:
    def need(columns: tuple[ast.Ident, ...]) -> None:
        for column in columns:
            if column.name not in live:
                ctx.error(
                    "FM0403",
                    f"unknown column `{column.name}`",
                    column.span,
                    "not in the schema (or dropped earlier)",
                    did_you_mean(column.name, live),
                )

    if isinstance(rule, ast.Dedupe):
        need(rule.columns)
        if rule.near is not None:
            near = rule.near.value / 100 if isinstance(rule.near, ast.Quantity) else rule.near.value
            if not 0 < near <= 1 or (isinstance(rule.near, ast.Quantity) and rule.near.unit != "%"):
                ctx.error(
                    "FM0304",
                    "`near` is a similarity between 0 and 1 (or a percentage)",
                    rule.near.span,
                    "out of range",
                    "write for example `near 0.9`",
                )
    elif isinstance(rule, ast.FilterRows):
        ExprChecker(ctx, live, "a cleaning rule").expect(rule.condition, BOOL, "a `where` clause")
    elif isinstance(rule, ast.DropColumns):
        need(rule.columns)
        for column in rule.columns:
            live.pop(column.name, None)
    elif isinstance(rule, ast.Normalize):
        need(rule.columns)
        for op in rule.operations:
            if op.name not in s.NORMALIZATIONS:
                ctx.error(
                    "FM0314",
                    f"unknown normalization `{op.name}`",
                    op.span,
                    "unknown",
                    did_you_mean(op.name, s.NORMALIZATIONS)
                    or f"choose from {', '.join(s.NORMALIZATIONS)}",
                )
    elif isinstance(rule, ast.Redact):
        need(rule.columns)
        for kind in rule.kinds:
            if kind.name not in s.PII_KINDS:
                ctx.error(
                    "FM0313",
                    f"unknown PII kind `{kind.name}`",
                    kind.span,
                    "unknown",
                    did_you_mean(kind.name, s.PII_KINDS) or f"choose from {', '.join(s.PII_KINDS)}",
                )


def _check_split(ctx: Ctx, split: ast.Split, columns: dict[str, str]) -> None:
    if is_file_split(split):
        check_file_split(ctx, split)
        return
    seen: set[str] = set()
    total = 0.0
    for part in split.parts:
        if part.name.name in seen:
            ctx.error(
                "FM0315", f"split `{part.name.name}` is listed twice", part.name.span, "repeated"
            )
        seen.add(part.name.name)
        share = part.share
        assert not isinstance(share, ast.String), "a split by files is checked above"
        if isinstance(share, ast.Quantity) and share.unit != "%":
            ctx.error(
                "FM0303",
                "a split's share is a percentage or a fraction",
                share.span,
                "wrong unit",
                "write e.g. `train 80%`",
            )
            return
        total += share.value / 100 if isinstance(share, ast.Quantity) else share.value
    if split.parts and abs(total - 1.0) > 1e-9:
        ctx.error(
            "FM0315",
            f"split shares add up to {total * 100:g}%, not 100%",
            split.span,
            "shares must cover every row once",
            "adjust the percentages to sum to 100%",
        )
    if split.by is not None:
        ExprChecker(ctx, columns, "a split key").infer(split.by)
    elif split.parts:
        ctx.error(
            "FM0315",
            "a split needs a key to assign rows deterministically",
            split.span,
            "no `by`",
            "end it with `by hash(ID_COLUMN)`",
        )


def check_grant(ctx: Ctx, grant: ast.Grant) -> None:
    for permission in grant.permissions:
        if permission.name not in s.PERMISSIONS:
            ctx.error(
                "FM0318",
                f"unknown permission `{permission.name}`",
                permission.span,
                "unknown permission",
                did_you_mean(permission.name, s.PERMISSIONS)
                or f"permissions: {', '.join(s.PERMISSIONS)}",
            )


def check_source_confinement(program: Program, roots: DataRoots,
                             folders: dict[str, Path] | None = None,
                             look_at_data: bool = False) -> None:  # fmt: skip
    """Refuse every source that reads outside `roots` (`..`, an absolute path or a symlink
    out of the project). Not one of `PASSES`: the roots come from the command line and the
    environment, never from the spec. `folders` names the folder of a file whose key is
    not its path (a document checked from text). `look_at_data`: a confined source must
    also match files with the schema's columns (`sources.py`)."""
    for source, symbol in program.declarations("dataset"):
        assert isinstance(symbol.node, ast.Dataset)
        ctx = Ctx(program, source)
        read = _source_read(ctx, symbol.node)
        if read is None:
            continue
        pattern, span = read
        spec_dir = (folders or {}).get(source.path) or Path(source.path).resolve().parent
        escapes = source_escapes(pattern, spec_dir, roots)
        if escapes:
            ctx.report(outside_project(symbol.node.name.name, pattern, escapes, roots, span))
        elif look_at_data:  # confined: its files may be looked at (headers, metadata)
            kind, options = _source_options(ctx, symbol.node)
            check_source_files(ctx, symbol.node, kind, pattern, options, span, spec_dir)
            check_split_files(ctx, symbol.node, pattern, spec_dir)


def _source_read(ctx: Ctx, dataset: ast.Dataset) -> tuple[str, Span] | None:
    """The glob the dataset's source reads (`let` constants followed) and the span of its
    path; None when the source is missing or malformed (reported elsewhere)."""
    found = setting(dataset.body, "source")
    call = found.value if isinstance(found, ast.Setting) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        return None
    positional = [a.value for a in call.args if a.name is None]
    named = {a.name.name: a.value for a in call.args if a.name is not None}
    path = string_literal(ctx, positional[0]) if positional else None
    if path is None:
        return None
    pattern = string_literal(ctx, named["pattern"]) if "pattern" in named else None
    return read_pattern(call.func.id, path.value, pattern.value if pattern else None), path.span


def _source_options(ctx: Ctx, dataset: ast.Dataset) -> tuple[str, dict[str, str]]:
    """The source's kind and its literal named options as text (`header` → "true")."""
    found = setting(dataset.body, "source")
    call = found.value if isinstance(found, ast.Setting) else None
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    options: dict[str, str] = {}
    for arg in call.args:
        if arg.name is None:
            continue
        if isinstance(arg.value, ast.Bool):
            options[arg.name.name] = str(arg.value.value).lower()
        else:
            text = string_literal(ctx, arg.value)
            if text is not None:
                options[arg.name.name] = text.value
    return call.func.id, options


def string_literal(ctx: Ctx, expr: ast.Expr, depth: int = 0) -> ast.String | None:
    """The string `expr` is, directly or through `let` constants."""
    if isinstance(expr, ast.String):
        return expr
    symbol = ctx.lookup(expr.id) if isinstance(expr, ast.Name) and depth < 16 else None
    if symbol is not None and isinstance(symbol.node, ast.Let):
        found = string_literal(ctx, symbol.node.value, depth + 1)
        return ast.String(found.value, expr.span) if found else None
    return None


def outside_project(dataset: str, pattern: str, escapes: list[Escape], roots: DataRoots,
                    span: Span | None, code: str = "FM0319") -> Diagnostic:  # fmt: skip
    """At the source's path (FM0319 from `fmc check`, FM0730 from the data stage): where
    the source leads, and the two fixes."""
    first = escapes[0]
    how = "through a symlink" if first.through_symlink else "outside the project"
    more = f" (and {len(escapes) - 1} more)" if len(escapes) > 1 else ""
    folder = first.target if first.target.is_dir() else first.target.parent
    return error(
        code,
        f"dataset `{dataset}` reads `{pattern}`, which leads {how} to `{first.target}`{more}",
        span,
        "outside the folders sources may read",
        help="move the data into the project folder, or allow its folder outside the spec: "
        f"`--allow-data {folder}` or {DATA_DIRS_ENV}={folder}",
        notes=(
            *(f"`{e.path}` is `{e.target}`" for e in escapes[:4]),
            f"sources may read {roots.describe()}",
        ),
    )

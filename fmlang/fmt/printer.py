"""The canonical layout of a module: statements, blocks, alignment and comments.

Every function here returns finished lines (indentation included). Comments are looked up by
statement in the `Attached` tables built by `fmlang.fmt.comments`; each comment printed is
recorded, and any that no statement claimed is kept at the end of the file, so that a comment
is never lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from fmlang.diagnostics import Span
from fmlang.fmt.comments import Spanned, attach, has_comments_inside
from fmlang.fmt.expr import bracketed_parts, format_expr, quote
from fmlang.fmt.layout import WIDTH, CommentedLine, LabelingLayout, align_comments
from fmlang.syntax import ast

INDENT = "  "

# A constraint starting with one of these could be read as continuing the one before it
# (`a` then `(b)` is the call `a(b)`), so the one before ends with `;`.
_CONTINUES_PREVIOUS = ("(", "-", "/", ".")

Rendered = list[tuple[Spanned, list[str]]]


def format_module(module: ast.Module) -> str:
    """The canonical text of a module, comments included, ending with one newline."""
    return _Printer(module).module()


class _Printer:
    def __init__(self, module: ast.Module) -> None:
        self.root = module
        self.attached = attach(module)
        self.printed: set[int] = set()

    # ---- comments ---------------------------------------------------------------
    def _comment(self, comment: ast.Comment) -> str:
        self.printed.add(id(comment))
        return comment.text.rstrip()

    def _with_comment(self, line: str, comment: ast.Comment | None) -> str:
        return line if comment is None else CommentedLine.of(line, self._comment(comment))

    def _leading(self, node: Spanned, indent: str) -> list[str]:
        """Own-line comments before a statement, keeping one blank line where there was one."""
        comments = self.attached.leading.get(id(node), [])
        lines: list[str] = []
        for i, comment in enumerate(comments):
            lines.append(indent + self._comment(comment))
            next_line = comments[i + 1].span.line if i + 1 < len(comments) else node.span.line
            if next_line - comment.span.end_line > 1:
                lines.append("")
        return lines

    def _blank_before(self, previous: Spanned, statement: Spanned) -> bool:
        """Whether the input has a blank line between two statements (one is kept)."""
        start = statement.span.line
        leading = self.attached.leading.get(id(statement))
        if leading:
            start = min(start, leading[0].span.line)
        return start - previous.span.end_line > 1

    def _dangling(self, node: Spanned, indent: str, last: Spanned | None) -> list[str]:
        """Comments before a block's `}` (or the end of the file), blank lines kept."""
        lines: list[str] = []
        previous_line = last.span.end_line if last is not None else None
        for comment in self.attached.dangling.get(id(node), []):
            if previous_line is not None and comment.span.line - previous_line > 1:
                lines.append("")
            lines.append(indent + self._comment(comment))
            previous_line = comment.span.end_line
        return lines

    def _trailing(self, node: Spanned, lines: list[str]) -> list[str]:
        lines[-1] = self._with_comment(lines[-1], self.attached.trailing.get(id(node)))
        return lines

    def _has_comments(self, span: Span) -> bool:
        return has_comments_inside(span, self.root.comments)

    # ---- the module ---------------------------------------------------------------
    def module(self) -> str:
        lines: list[str] = []
        previous: ast.Item | None = None
        for item in self.root.items:
            if previous is not None and not _grouped(previous, item):
                lines.append("")
            lines += self._leading(item, "")
            lines += self._trailing(item, self._item(item))
            previous = item
        lines += self._dangling(self.root, "", previous)
        lines += [c.text.rstrip() for c in self.root.comments if id(c) not in self.printed]
        return "\n".join(align_comments(lines)) + "\n" if lines else ""

    def _item(self, item: ast.Item) -> list[str]:
        if isinstance(item, ast.ImportModule):
            names = "" if item.names is None else ".{" + _names(item.names) + "}"
            return [f"import {item.dotted}{names}"]
        if isinstance(item, ast.ImportFile):
            return [f"import {quote(item.path)}"]
        if isinstance(item, ast.Let):
            return [f"let {item.name.name} = {format_expr(item.value)}"]
        if isinstance(item, ast.Dataset):
            return self._braced(item, f"dataset {item.name.name}", "", self._body(item.body, ""))
        if isinstance(item, ast.Labels):
            head = f"labels {item.name.name} on {_dotted(item.source)}"
            return self._braced(item, head, "", self._body(item.body, ""))
        if isinstance(item, ast.Block):
            head = f"{item.kind} {item.name.name}"
            return self._braced(item, head, "", self._body(item.body, ""))
        return self._constraints(item)

    # ---- blocks -------------------------------------------------------------------
    def _braced(self, node: Spanned, head: str, indent: str, statements: Rendered) -> list[str]:
        header = self.attached.header.get(id(node))
        dangling = self.attached.dangling.get(id(node), [])
        if not statements and header is None and not dangling:
            return [f"{indent}{head} {{}}"]
        inner = indent + INDENT
        lines = [self._with_comment(f"{indent}{head} {{", header)]
        previous: Spanned | None = None
        for statement, statement_lines in statements:
            if previous is not None and self._blank_before(previous, statement):
                lines.append("")
            lines += self._leading(statement, inner)
            lines += self._trailing(statement, statement_lines)
            previous = statement
        lines += self._dangling(node, inner, previous)
        lines.append(indent + "}")
        return lines

    def _body(self, body: Sequence[Spanned], indent: str, nested: bool = False) -> Rendered:
        """The statements of a block; `nested` blocks write settings as `key = value`."""
        inner = indent + INDENT
        lfs = LabelingLayout([s for s in body if isinstance(s, ast.LabelingFunction)], inner)
        widths = self._key_widths(body)
        rendered: Rendered = []
        for statement in body:
            width = widths.get(id(statement), 0)
            if isinstance(statement, ast.LabelingFunction):
                lines = [lfs.line(statement)]
            elif isinstance(statement, ast.Setting) and statement.by:  # `select by m on s`
                on = f" on {format_expr(statement.on)}" if statement.on is not None else ""
                lines = [f"{inner}{statement.key.name} by {format_expr(statement.value)}{on}"]
            elif isinstance(statement, ast.Setting):
                equals = " = " if nested else " "
                head = f"{inner}{statement.key.name.ljust(width)}{equals}"
                lines = _value_lines(head, statement.value, inner)
            elif isinstance(statement, ast.BlockSetting):
                lines = self._block_setting(statement, inner)
            else:
                lines = self._statement(statement, inner)
            rendered.append((statement, lines))
        return rendered

    def _key_widths(self, body: Sequence[Spanned]) -> dict[int, int]:
        """Keys of consecutive settings (no blank line between) share a width."""
        runs: list[list[ast.Setting]] = [[]]
        previous: Spanned | None = None
        for statement in body:
            if isinstance(statement, ast.Setting) and not statement.by:
                if previous is not None and self._blank_before(previous, statement):
                    runs.append([])
                runs[-1].append(statement)
            else:
                runs.append([])
            previous = statement
        widths: dict[int, int] = {}
        for run in runs:
            width = max((len(s.key.name) for s in run), default=0)
            widths.update((id(s), width) for s in run)
        return widths

    def _statement(self, statement: Spanned, indent: str) -> list[str]:
        if isinstance(statement, ast.Grant):
            return [indent + _grant(statement)]
        if isinstance(statement, ast.Schema):
            return self._schema(statement, indent)
        if isinstance(statement, ast.Clean):
            rules: Rendered = [(r, [indent + INDENT + _clean_rule(r)]) for r in statement.rules]
            return self._braced(statement, "clean", indent, rules)
        if isinstance(statement, ast.Split):
            return self._split(statement, indent)
        raise TypeError(f"not a statement: {statement!r}")

    def _one_line_block(self, block: ast.BlockSetting, indent: str) -> str | None:
        """`{ a = 1, b = 2 }` for a nested block of plain settings written on one line."""
        if not block.body:
            return None
        settings = [s for s in block.body if isinstance(s, ast.Setting)]
        if len(settings) < len(block.body) or block.span.line != block.span.end_line:
            return None
        if self._has_comments(block.span):
            return None
        text = "{ " + ", ".join(f"{s.key.name} = {format_expr(s.value)}" for s in settings) + " }"
        fits = len(f"{indent}{block.key.name} {text}") <= WIDTH
        return text if fits else None

    def _block_setting(self, block: ast.BlockSetting, indent: str) -> list[str]:
        one_line = self._one_line_block(block, indent)
        if one_line is not None:
            return [f"{indent}{block.key.name} {one_line}"]
        body = self._body(block.body, indent, nested=True)
        return self._braced(block, block.key.name, indent, body)

    def _schema(self, schema: ast.Schema, indent: str) -> list[str]:
        width = max((len(f.name.name) + 1 for f in schema.fields), default=0)
        fields: Rendered = [(f, [indent + INDENT + _field(f, width)]) for f in schema.fields]
        return self._braced(schema, "schema", indent, fields)

    def _split(self, split: ast.Split, indent: str) -> list[str]:
        parts = [f"{p.name.name} {format_expr(p.share)}" for p in split.parts]
        by = None if split.by is None else f"by {format_expr(split.by)}"
        if (parts or by) and not self._has_comments(split.span):
            inside = " ".join(x for x in (", ".join(parts), by) if x)
            line = f"{indent}split {{ {inside} }}"
            if len(line) <= WIDTH:
                return [line]
        inner = indent + INDENT
        rendered: Rendered = [
            (p, [inner + text]) for p, text in zip(split.parts, parts, strict=True)
        ]
        if split.by is not None and by is not None:
            rendered.append((split.by, [inner + by]))
        return self._braced(split, "split", indent, rendered)

    def _constraints(self, block: ast.Constraints) -> list[str]:
        texts = [_constraint(c) for c in block.items]
        rendered: Rendered = []
        for i, constraint in enumerate(block.items):
            following = texts[i + 1] if i + 1 < len(texts) else ""
            end = ";" if following.startswith(_CONTINUES_PREVIOUS) else ""
            rendered.append((constraint, [INDENT + texts[i] + end]))
        return self._braced(block, f"constraints {block.target.name}", "", rendered)


def _value_lines(head: str, value: ast.Expr, indent: str) -> list[str]:
    """`head value` on one line, or a call or list too long for one line opened up."""
    flat = head + format_expr(value)
    parts = bracketed_parts(value)
    if len(flat) <= WIDTH or parts is None:
        return [flat]
    opening, items, closing = parts
    inner = indent + INDENT
    return [head + opening, *(f"{inner}{item}," for item in items), indent + closing]


def _grouped(previous: ast.Item, item: ast.Item) -> bool:
    """Consecutive imports, and consecutive lets, are not separated by a blank line."""
    imports = (ast.ImportModule, ast.ImportFile)
    if isinstance(previous, imports) and isinstance(item, imports):
        return True
    return isinstance(previous, ast.Let) and isinstance(item, ast.Let)


def _names(names: Sequence[ast.Ident]) -> str:
    return ", ".join(name.name for name in names)


def _dotted(path: Sequence[ast.Ident]) -> str:
    return ".".join(part.name for part in path)


def _grant(grant: ast.Grant) -> str:
    principals = ", ".join(quote(p.name) if p.quoted else p.name for p in grant.principals)
    return f"grant {_names(grant.permissions)} to {principals}"


def _field(field: ast.Field, width: int) -> str:
    type_args = f"[{_names(field.type.args)}]" if field.type.args else ""
    text = f"{(field.name.name + ':').ljust(width)} {field.type.name.name}{type_args}"
    text += "".join(f" @{tag.name}" for tag in field.tags)
    if field.default is not None:
        text += f" = {format_expr(field.default)}"
    if field.options:
        text += " { " + ", ".join(_column_option(o) for o in field.options) + " }"
    return text


def _column_option(option: ast.Setting | ast.BlockSetting) -> str:
    if isinstance(option, ast.Setting):
        return f"{option.key.name} = {format_expr(option.value)}"
    inner = [o for o in option.body if isinstance(o, ast.Setting | ast.BlockSetting)]
    return f"{option.key.name} {{ {', '.join(_column_option(o) for o in inner)} }}"


def _clean_rule(rule: ast.CleanRule) -> str:
    if isinstance(rule, ast.Dedupe):
        near = "" if rule.near is None else f" near {rule.near.text}"
        return f"dedupe {_names(rule.columns)}{near}"
    if isinstance(rule, ast.FilterRows):
        verb = "keep" if rule.keep else "drop"
        return f"{verb} where {format_expr(rule.condition)}"
    if isinstance(rule, ast.DropColumns):
        return f"drop {_names(rule.columns)}"
    if isinstance(rule, ast.Normalize):
        return f"normalize {_names(rule.columns)}: {_names(rule.operations)}"
    return f"redact {_names(rule.kinds)} in {_names(rule.columns)}"


def _constraint(constraint: ast.Constraint) -> str:
    text = format_expr(constraint.expr)
    text = text if constraint.on is None else f"{text} on {format_expr(constraint.on)}"
    clause = constraint.confidence
    if clause is not None:
        text += f" with {clause.word.name} {format_expr(clause.level)}"
    return text

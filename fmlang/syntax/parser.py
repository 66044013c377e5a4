"""Text → AST. Lark types never leave this package."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from functools import cache
from typing import Any, Protocol

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, VisitError

from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.paths import grammar_file
from fmlang.syntax import ast
from fmlang.syntax.errors import syntax_diagnostic
from fmlang.syntax.untrusted import bidi_diagnostics

MAX_SOURCE_BYTES = 16 * 1024 * 1024


@cache
def _parser() -> Lark:
    return Lark(
        grammar_file().read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
        lexer_callbacks={"COMMENT": _collect_comment},
    )


class ParseResult:
    """A module, or the diagnostics explaining why there is none."""

    def __init__(self, module: ast.Module | None, diagnostics: tuple[Diagnostic, ...]) -> None:
        self.module = module
        self.diagnostics = diagnostics


class Reparser(Protocol):
    """Something that parses like `parse_whole`, reusing earlier work (`incremental.py`)."""

    def parse(self, text: str, file: str) -> ParseResult: ...


# Set by `fmlang.syntax.incremental.reusing_parses` (the language server) so that every
# `parse` under it, the loader's included, reparses only the top-level items that changed.
REPARSER: ContextVar[Reparser | None] = ContextVar("fmlang_reparser", default=None)


def parse(text: str, file: str = "<input>") -> ParseResult:
    """The module and its syntax errors, with every bidirectional control in the text
    reported (FM0108), whether the parse reused earlier work or not."""
    reparser = REPARSER.get()
    result = reparser.parse(text, file) if reparser is not None else parse_whole(text, file)
    hidden = bidi_diagnostics(text, file)
    return ParseResult(result.module, result.diagnostics + hidden) if hidden else result


def parse_whole(text: str, file: str = "<input>") -> ParseResult:
    if len(text) > MAX_SOURCE_BYTES:
        return ParseResult(None, (_too_large(file, len(text)),))
    comments: list[Token] = []
    try:
        module = _parse_module(text, file, comments)
    except LarkError as exc:
        return ParseResult(None, (syntax_diagnostic(exc, text, file),))
    except (RecursionError, VisitError):
        return ParseResult(None, (too_deep(file),))
    kept = tuple(ast.Comment(str(c), _token_span(c, file)) for c in comments)
    return ParseResult(ast.Module(module.items, kept, module.span), ())


# Per-parse state for the shared parser: the file being parsed and its comments.
_state = threading.local()


def _collect_comment(token: Token) -> Token:
    _state.comments.append(token)
    return token


def _parse_module(text: str, file: str, comments: list[Token]) -> ast.Module:
    """Comments are ignored by the grammar; a lexer callback keeps them for `fmt`."""
    _state.comments, _state.file = comments, file
    try:
        module: ast.Module = _ToAst().transform(_parser().parse(text))
        return module
    finally:
        _state.comments, _state.file = [], "<input>"


def _too_large(file: str, size: int) -> Diagnostic:
    return error(
        "FM0003",
        f"the file is too large to be a spec ({size:,} characters; the limit is "
        f"{MAX_SOURCE_BYTES:,})",
        Span(file, 1, 1, 1, 1),
        help='split the spec into several files joined with `import "file.fm"`',
    )


def too_deep(file: str) -> Diagnostic:
    return error(
        "FM0106",
        "the spec is nested too deeply to compile",
        Span(file, 1, 1, 1, 1),
        help="flatten deeply nested expressions or lists (a few dozen levels is plenty)",
    )


def _token_span(token: Token, file: str) -> Span:
    return Span(
        file,
        token.line or 1,
        token.column or 1,
        token.end_line or token.line or 1,
        token.end_column or token.column or 1,
        token.start_pos or 0,
        token.end_pos or 0,
    )


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def split_quantity(text: str) -> tuple[str, str]:
    """`3.35TB/s` → (`3.35`, `TB/s`); `3e-4ms` → (`3e-4`, `ms`)."""
    i = 0
    while i < len(text) and (text[i].isdigit() or text[i] in "._"):
        i += 1
    if i < len(text) and text[i] in "eE":
        j = i + 1
        if j < len(text) and text[j] in "+-":
            j += 1
        if j < len(text) and text[j].isdigit():
            while j < len(text) and text[j].isdigit():
                j += 1
            i = j
    return text[:i], text[i:]


@v_args(meta=True)
class _ToAst(Transformer[Token, Any]):
    """Builds AST nodes bottom-up; each method mirrors one grammar rule."""

    @property
    def file(self) -> str:
        return str(getattr(_state, "file", "<input>"))

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 1)
        return Span(
            self.file,
            meta.line,
            meta.column,
            meta.end_line,
            meta.end_column,
            meta.start_pos,
            meta.end_pos,
        )

    def _ident(self, token: Token) -> ast.Ident:
        return ast.Ident(str(token), _token_span(token, self.file))

    # ---- top level ----------------------------------------------------------
    def start(self, meta: Any, items: list[Any]) -> ast.Module:
        return ast.Module(tuple(items), (), self._span(meta))

    def dotted_name(self, meta: Any, children: list[Any]) -> tuple[ast.Ident, ...]:
        if len(children) == 1:
            return (self._ident(children[0]),)
        return (*children[0], self._ident(children[1]))

    def name_list(self, meta: Any, children: list[Token]) -> tuple[ast.Ident, ...]:
        return tuple(self._ident(t) for t in children)

    column_list = name_list

    def import_module(self, meta: Any, children: list[Any]) -> ast.ImportModule:
        return ast.ImportModule(children[0], None, self._span(meta))

    def import_names(self, meta: Any, children: list[Any]) -> ast.ImportModule:
        return ast.ImportModule(children[0], children[1], self._span(meta))

    def import_file(self, meta: Any, children: list[Token]) -> ast.ImportFile:
        return ast.ImportFile(_unquote(str(children[0])), self._span(meta))

    def let_decl(self, meta: Any, children: list[Any]) -> ast.Let:
        return ast.Let(self._ident(children[0]), children[1], self._span(meta))

    def literal_list(self, meta: Any, children: list[Any]) -> ast.ListExpr:
        return ast.ListExpr(tuple(children), self._span(meta))

    def dataset_decl(self, meta: Any, children: list[Any]) -> ast.Dataset:
        return ast.Dataset(self._ident(children[0]), tuple(children[1:]), self._span(meta))

    def labels_decl(self, meta: Any, children: list[Any]) -> ast.Labels:
        name, _on, source, *body = children
        return ast.Labels(self._ident(name), source, tuple(body), self._span(meta))

    def _block(self, kind: str, meta: Any, children: list[Any]) -> ast.Block:
        return ast.Block(kind, self._ident(children[0]), tuple(children[1:]), self._span(meta))

    def model_decl(self, meta: Any, children: list[Any]) -> ast.Block:
        return self._block("model", meta, children)

    def merge_decl(self, meta: Any, children: list[Any]) -> ast.Block:
        return self._block("merge", meta, children)

    def deploy_decl(self, meta: Any, children: list[Any]) -> ast.Block:
        return self._block("deploy", meta, children)

    def base_model_decl(self, meta: Any, children: list[Any]) -> ast.Block:
        return self._block("base_model", meta, children)

    def hardware_decl(self, meta: Any, children: list[Any]) -> ast.Block:
        return self._block("hardware", meta, children)

    def constraints_decl(self, meta: Any, children: list[Any]) -> ast.Constraints:
        return ast.Constraints(self._ident(children[0]), tuple(children[1:]), self._span(meta))

    # ---- statements -----------------------------------------------------------
    def value_setting(self, meta: Any, children: list[Any]) -> ast.Setting:
        return ast.Setting(self._ident(children[0]), children[-1], self._span(meta))

    def select_stmt(self, meta: Any, children: list[Any]) -> ast.Setting:
        keyword, _, metric, *rest = children
        on = rest[1] if len(rest) > 1 else None
        key = ast.Ident(str(keyword), _token_span(keyword, self.file))
        return ast.Setting(key, metric, self._span(meta), by=True, on=on)

    def block_setting(self, meta: Any, children: list[Any]) -> ast.BlockSetting:
        return ast.BlockSetting(self._ident(children[0]), tuple(children[1:]), self._span(meta))

    def grant_stmt(self, meta: Any, children: list[Any]) -> ast.Grant:
        permissions, *principals = children
        return ast.Grant(
            permissions,
            tuple(
                ast.Principal(
                    _unquote(str(p)) if p.type == "STRING" else str(p),
                    p.type == "STRING",
                    _token_span(p, self.file),
                )
                for p in principals
            ),
            self._span(meta),
        )

    def schema_block(self, meta: Any, children: list[Any]) -> ast.Schema:
        return ast.Schema(tuple(children), self._span(meta))

    def field(self, meta: Any, children: list[Any]) -> ast.Field:
        name, type_ref, *rest = children
        options = tuple(rest.pop()) if rest and isinstance(rest[-1], list) else ()
        default = rest.pop() if rest and not isinstance(rest[-1], ast.Ident) else None
        return ast.Field(
            self._ident(name), type_ref, tuple(rest), default, self._span(meta), options
        )

    def field_options(self, meta: Any, children: list[Any]) -> list[ast.Setting | ast.BlockSetting]:
        return [c for c in children if isinstance(c, ast.Setting | ast.BlockSetting)]

    def type_ref(self, meta: Any, children: list[Any]) -> ast.TypeRef:
        args = children[1] if len(children) > 1 and children[1] is not None else ()
        return ast.TypeRef(self._ident(children[0]), args, self._span(meta))

    def tag(self, meta: Any, children: list[Token]) -> ast.Ident:
        return ast.Ident(str(children[0]), self._span(meta))

    def clean_block(self, meta: Any, children: list[Any]) -> ast.Clean:
        return ast.Clean(tuple(children), self._span(meta))

    def dedupe_rule(self, meta: Any, children: list[Any]) -> ast.Dedupe:
        near = children[1] if len(children) > 1 else None
        return ast.Dedupe(children[0], near, self._span(meta))

    def drop_rows_rule(self, meta: Any, children: list[Any]) -> ast.FilterRows:
        return ast.FilterRows(False, children[0], self._span(meta))

    def keep_rows_rule(self, meta: Any, children: list[Any]) -> ast.FilterRows:
        return ast.FilterRows(True, children[0], self._span(meta))

    def drop_columns_rule(self, meta: Any, children: list[Any]) -> ast.DropColumns:
        return ast.DropColumns(children[0], self._span(meta))

    def normalize_rule(self, meta: Any, children: list[Any]) -> ast.Normalize:
        return ast.Normalize(children[0], children[1], self._span(meta))

    def redact_rule(self, meta: Any, children: list[Any]) -> ast.Redact:
        return ast.Redact(children[0], children[1], self._span(meta))

    def split_block(self, meta: Any, children: list[Any]) -> ast.Split:
        by = children.pop() if children and isinstance(children[-1], _SplitBy) else None
        return ast.Split(tuple(children), by.expr if by else None, self._span(meta))

    def split_part(self, meta: Any, children: list[Any]) -> ast.SplitPart:
        share = children[1]
        if isinstance(share, Token):  # `train "train.json"`: the split's source files
            share = ast.String(_unquote(str(share)), _token_span(share, self.file))
        return ast.SplitPart(self._ident(children[0]), share, self._span(meta))

    def split_by(self, meta: Any, children: list[Any]) -> _SplitBy:
        return _SplitBy(children[1])

    def lf_stmt(self, meta: Any, children: list[Any]) -> ast.LabelingFunction:
        target = self._ident(children[2]) if len(children) > 2 else None
        return ast.LabelingFunction(self._ident(children[0]), children[1], target, self._span(meta))

    def constraint(self, meta: Any, children: list[Any]) -> ast.Constraint:
        level = children.pop() if isinstance(children[-1], ast.Confidence) else None
        on = children[2] if len(children) > 2 else None
        return ast.Constraint(children[0], on, self._span(meta), level)

    def confidence(self, meta: Any, children: list[Any]) -> ast.Confidence:
        return ast.Confidence(self._ident(children[1]), children[2], self._span(meta))

    # ---- expressions ----------------------------------------------------------
    def range(self, meta: Any, children: list[Any]) -> ast.Range:
        return ast.Range(children[0], children[1], self._span(meta))

    def _fold(self, meta: Any, children: list[Any], op: str | None = None) -> Any:
        """Left-associative chains: `a op b op c` with ops as tokens or implicit."""
        result = children[0]
        i = 1
        while i < len(children):
            if op is None:
                operator, right = str(children[i]), children[i + 1]
                i += 2
            else:
                operator, right = op, children[i]
                i += 1
            result = ast.Binary(operator, result, right, _join(result.span, right.span))
        return result

    def or_expr(self, meta: Any, children: list[Any]) -> Any:
        return self._fold(meta, children, "or")

    def and_expr(self, meta: Any, children: list[Any]) -> Any:
        return self._fold(meta, children, "and")

    def sum(self, meta: Any, children: list[Any]) -> Any:
        return self._fold(meta, children)

    product = sum
    comparison = sum
    match_op = sum

    def contains_op(self, meta: Any, children: list[Any]) -> ast.Binary:
        return ast.Binary("contains", children[0], children[1], self._span(meta))

    def allows_op(self, meta: Any, children: list[Any]) -> ast.Binary:
        return ast.Binary("allows", children[0], children[1], self._span(meta))

    def in_op(self, meta: Any, children: list[Any]) -> ast.Binary:
        return ast.Binary("in", children[0], children[1], self._span(meta))

    def not_op(self, meta: Any, children: list[Any]) -> ast.Unary:
        return ast.Unary("not", children[0], self._span(meta))

    def neg(self, meta: Any, children: list[Any]) -> ast.Unary:
        return ast.Unary("-", children[-1], self._span(meta))

    def attribute(self, meta: Any, children: list[Any]) -> ast.Attribute:
        return ast.Attribute(children[0], self._ident(children[1]), self._span(meta))

    def call(self, meta: Any, children: list[Any]) -> ast.Call:
        args = children[1] if children[1] is not None else ()
        return ast.Call(children[0], tuple(args), self._span(meta))

    def arguments(self, meta: Any, children: list[Any]) -> list[ast.Argument]:
        return [
            c if isinstance(c, ast.Argument) else ast.Argument(None, c, c.span) for c in children
        ]

    def keyword_argument(self, meta: Any, children: list[Any]) -> ast.Argument:
        return ast.Argument(self._ident(children[0]), children[1], self._span(meta))

    def name(self, meta: Any, children: list[Token]) -> ast.Name:
        return ast.Name(str(children[0]), self._span(meta))

    def number(self, meta: Any, children: list[Token]) -> ast.Number:
        return ast.Number(str(children[0]), self._span(meta))

    def quantity(self, meta: Any, children: list[Token]) -> ast.Quantity:
        text = str(children[0])
        magnitude, unit = split_quantity(text)
        return ast.Quantity(text, magnitude, unit, self._span(meta))

    def string(self, meta: Any, children: list[Token]) -> ast.String:
        return ast.String(_unquote(str(children[0])), self._span(meta))

    def regex(self, meta: Any, children: list[Token]) -> ast.Regex:
        text = str(children[0])
        end = text.rindex("/")
        return ast.Regex(text[1:end], text[end + 1 :], self._span(meta))

    def true(self, meta: Any, children: list[Any]) -> ast.Bool:
        return ast.Bool(True, self._span(meta))

    def false(self, meta: Any, children: list[Any]) -> ast.Bool:
        return ast.Bool(False, self._span(meta))

    def auto(self, meta: Any, children: list[Any]) -> ast.Auto:
        domain = children[0] if children else None
        if len(children) == 2:
            domain = ast.Range(children[0], children[1], _join(children[0].span, children[1].span))
        return ast.Auto(domain, self._span(meta))

    def list(self, meta: Any, children: list[Any]) -> ast.ListExpr:
        items = tuple(c for c in children if c is not None)
        return ast.ListExpr(items, self._span(meta))


class _SplitBy:
    def __init__(self, expr: ast.Expr) -> None:
        self.expr = expr


def _join(a: Span, b: Span) -> Span:
    return Span(a.file, a.line, a.column, b.end_line, b.end_column, a.start, b.end)

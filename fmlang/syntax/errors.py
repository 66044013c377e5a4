"""Lark's parse exceptions → diagnostics in the user's words."""

from __future__ import annotations

from functools import cache

from lark import Lark
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr, Token

from fmlang.diagnostics import Diagnostic, Label, Severity, Span, error
from fmlang.suggest import closest

_REGEX_TERMINALS = {
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "QUANTITY": "a number with a unit",
    "REGEX": "a /regex/",
    "COMP_OP": "a comparison (`<=`, `>=`, `==`, `!=`, `<`, `>`)",
    "MATCH_OP": "`~` or `!~`",
    "MUL_OP": "`*` or `/`",
    "$END": "the end of the file",
}

_TOP_LEVEL = (
    "import", "let", "dataset", "labels", "model", "merge", "constraints", "deploy",
    "base_model", "hardware",
)  # fmt: skip


@cache
def _terminal_words(parser: Lark) -> dict[str, str]:
    words = dict(_REGEX_TERMINALS)
    for terminal in parser.terminals:
        if isinstance(terminal.pattern, PatternStr):
            words[terminal.name] = f"`{terminal.pattern.value}`"
    return words


def _keyword_terminals(parser: Lark) -> dict[str, str]:
    return {
        t.name: t.pattern.value
        for t in parser.terminals
        if isinstance(t.pattern, PatternStr) and t.pattern.value.isidentifier()
    }


def describe_expected(expected: set[str], words: dict[str, str]) -> str:
    names = sorted({words.get(t, t) for t in expected if not t.startswith("_")})
    # Put the most helpful alternatives first: punctuation, then keywords, then classes.
    names.sort(key=lambda w: (not w.startswith("`"), len(w) > 3, w))
    if len(names) > 12:
        return "an operator or the end of the statement"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _point(file: str, text: str, line: int, column: int, width: int = 1) -> Span:
    offset = _offset(text, line, column)
    return Span(file, line, column, line, column + width, offset, offset + width)


def _offset(text: str, line: int, column: int) -> int:
    start = 0
    for _ in range(line - 1):
        nxt = text.find("\n", start)
        if nxt < 0:
            break
        start = nxt + 1
    return start + column - 1


def _end_span(file: str, text: str, last: Token) -> Span:
    """Just after the last token (Lark's `$END` borrows its position), else after the text."""
    end = last.end_pos if last.end_pos is not None else len(text.rstrip())
    line, column = _line_col(text, end)
    return Span(file, line, column, line, column, end, end)


def unclosed_brace(text: str) -> int | None:
    """Offset of the innermost `{` never closed, skipping strings and comments."""
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
        elif char == '"':
            i += 1
            while i < n and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif char == "{":
            stack.append(i)
        elif char == "}" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def syntax_diagnostic(exc: LarkError, text: str, file: str) -> Diagnostic:
    from fmlang.syntax.parser import _parser

    parser = _parser()
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, parser, text, file)
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_character(exc, parser, text, file)
    if isinstance(exc, UnexpectedInput):
        line, column = getattr(exc, "line", 1), getattr(exc, "column", 1)
        return error("FM0101", "the spec cannot be parsed here", _point(file, text, line, column))
    return error("FM0101", f"the spec cannot be parsed: {exc}", Span(file, 1, 1, 1, 1))


def _unexpected_token(exc: UnexpectedToken, parser: Lark, text: str, file: str) -> Diagnostic:
    words = _terminal_words(parser)
    token = exc.token
    expected = set(exc.accepts or exc.expected)
    wanted = describe_expected(expected, words)
    if token.type == "$END":
        return _unexpected_end(expected, wanted, text, file, token)
    value = str(token)
    span = _point(file, text, token.line or 1, token.column or 1, max(len(value), 1))
    if value == "/" and "REGEX" in expected:
        return _unterminated_regex(span)
    keywords = _keyword_terminals(parser)
    keyword = _keyword_before(exc, keywords)
    if keyword is not None and value in ("=", ":"):
        return _keyword_as_name(keyword, file, text)
    if token.type == "NAME" and expected and expected <= set(keywords) | {"$END"}:
        guess = closest(value, [keywords[t] for t in expected if t in keywords])
        if guess:
            return error(
                "FM0105",
                f"unknown word `{value}`: expected {wanted}",
                span,
                f"did you mean `{guess}`?",
                help=f"replace `{value}` with `{guess}`",
            )
    if token.type in keywords and "NAME" in expected:
        return error(
            "FM0107",
            f"`{value}` is a keyword here and cannot be used as a name",
            span,
            "keyword where a name was expected",
            help=f"choose another name, for example `{value}_`",
        )
    shown = value if len(value) <= 40 else value[:30] + "…"
    found = words.get(token.type, f"`{shown}`") if token.type in keywords else f"`{shown}`"
    return error(
        "FM0101",
        f"expected {wanted}, found {found}",
        span,
        "unexpected here",
        help=_hint(token.type, value, expected),
    )


def _keyword_before(exc: UnexpectedToken, keywords: dict[str, str]) -> Token | None:
    """The keyword the parser shifted just before the unexpected token, if it was one."""
    state = getattr(exc.interactive_parser, "parser_state", None)
    stack = getattr(state, "value_stack", None) or [None]
    last = stack[-1]
    return last if isinstance(last, Token) and last.type in keywords else None


def _keyword_as_name(keyword: Token, file: str, text: str) -> Diagnostic:
    """`schema = 5`, `grant: text`: a keyword written where a setting or column name goes."""
    value = str(keyword)
    span = _point(file, text, keyword.line or 1, keyword.column or 1, len(value))
    return error(
        "FM0107",
        f"`{value}` is a keyword here and cannot be used as a name",
        span,
        "keyword where a name was expected",
        help=f"choose another name, for example `{value}_`",
    )


def _unterminated_regex(span: Span) -> Diagnostic:
    return error(
        "FM0104",
        "this regex is never closed",
        span,
        "regex starts here",
        help="close the regex with `/` on the same line (write `\\/` for a slash inside it)",
    )


def _hint(found: str, value: str, expected: set[str]) -> str | None:
    if value == "=" and "COMP_OP" in expected:
        return "comparisons are written `==`, `<=` or `>=`"
    if value == "=" and "COLON" in expected:
        return "use `:` here, as in `COLUMN: type` or `lf name: expression -> class`"
    if expected == {"COLON"}:
        return (
            "a column is written `name: type`, a labeling function `lf name: expression -> class`"
        )
    if "RBRACE" in expected and found in {"LBRACE"}:
        return "blocks cannot nest here; close the previous block with `}` first"
    if value in {"'", "`"}:
        return 'strings are written in double quotes: "text"'
    if "RBRACE" in expected:
        return (
            "a statement ends at the end of its line; "
            "start the next one, or close the block with `}`"
        )
    return None


def _unexpected_end(
    expected: set[str], wanted: str, text: str, file: str, last: Token
) -> Diagnostic:
    end = _end_span(file, text, last)
    brace = unclosed_brace(text) if "RBRACE" in expected else None
    if brace is not None:
        line, column = _line_col(text, brace)
        opened = Span(file, line, column, line, column + 1, brace, brace + 1)
        return Diagnostic(
            Severity.ERROR,
            "FM0103",
            "the file ends inside a block: a `{` is never closed",
            (
                Label(end, "the file ends here", True),
                Label(opened, "this `{` is never closed", False),
            ),
            (),
            "add `}` to close the block",
        )
    return error("FM0103", f"the file ends too early: expected {wanted}", end, "the file ends here")


def _unexpected_character(
    exc: UnexpectedCharacters, parser: Lark, text: str, file: str
) -> Diagnostic:
    line, column = exc.line, exc.column
    position = exc.pos_in_stream or 0
    char = text[position] if position < len(text) else ""
    span = _point(file, text, line, column)
    if char == '"':
        return error(
            "FM0104",
            "this string is never closed",
            span,
            "string starts here",
            help='close the string with `"` on the same line (write `\\"` for a quote inside it)',
        )
    if char == "/" and "REGEX" in exc.allowed:
        return _unterminated_regex(span)
    wanted = describe_expected(set(exc.allowed), _terminal_words(parser))
    shown = repr(char) if not char.isprintable() or char.isspace() else f"`{char}`"
    return error(
        "FM0102",
        f"unexpected character {shown}: expected {wanted}",
        span,
        "not valid here",
        help=_char_hint(char),
    )


def _char_hint(char: str) -> str | None:
    if char == "'":
        return 'strings are written in double quotes: "text"'
    if char in "{}":
        return "check that every `{` has a matching `}`"
    if char in "$&|!":
        return "logical operators are written `and`, `or` and `not`"
    return None

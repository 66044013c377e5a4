"""Hypothesis strategies for random but grammatical `.fm` text.

    from tests.strategies import specs, expressions, identifiers

`specs()` draws whole files: imports, lets and every kind of block, statements joined by
newlines, `;`, `,` or spaces, with `#` comments between statements, after `{`, before `}`,
inside bracketed expressions, and at the start and end of the file. `expressions()` draws random
trees with every operator and literal kind (and `auto`, `auto in x`, `auto in lo..hi`), each
operand parenthesized where the grammar's precedence needs it, plus random redundant
parentheses. The text is meant to parse; it is *not* meant to be meaningful to the checker
(names are random).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hypothesis import strategies as st

_KEYWORD_TEXT = """
    import let dataset labels model merge constraints deploy base_model hardware schema clean
    split grant lf dedupe drop keep normalize redact near where by to on in and or not contains
    allows true false auto
"""
KEYWORDS = frozenset(_KEYWORD_TEXT.split())

# `by` and `on` are keywords after an expression but still usable as setting and field names.
KEY_ONLY_NAMES = ("by", "on")

_COMMON = ("a", "x", "rank", "CONTENT", "lr", "train", "text", "value", "_t0", "p95", "e5", "E")
_UNITS = ("ms", "s", "GiB", "MiB", "GB", "%", "TB/s", "tok/s", "h", "USD", "Ex", "e")
_COMPARISONS = ("<=", ">=", "==", "!=", "<", ">", "~", "!~", "contains", "allows", "in")
_ITEM_KINDS = (
    "import", "let", "dataset", "labels", "constraints",
    "model", "merge", "deploy", "base_model", "hardware",
)  # fmt: skip
_ESCAPES = ('\\"', "\\\\", "\\n", "\\t", "\\r", "\\q")


@dataclass(frozen=True)
class _Options:
    comments: bool


def _is_free(name: str) -> bool:
    return name not in KEYWORDS


identifiers: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(_COMMON),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(_is_free),
)
keys = st.one_of(identifiers, st.sampled_from(KEY_ONLY_NAMES))

_comment_chars = st.characters(
    blacklist_categories=("Cs",),
    blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
)
comment_texts = st.builds(lambda body: "#" + body, st.text(_comment_chars, max_size=12))


# ---- literals -------------------------------------------------------------------


@st.composite
def numbers(draw: st.DrawFn) -> str:
    whole = draw(st.from_regex(r"[0-9][0-9_]{0,3}|[0-9]{1,3}", fullmatch=True))
    fraction = draw(st.sampled_from(["", ".5", ".25", ".0"]))
    text = draw(st.sampled_from([whole + fraction, fraction or ".5"]))
    return text + draw(st.sampled_from(["", "", "e3", "E-4", "e+2"]))


quantities = st.builds(lambda n, u: n + u, numbers(), st.sampled_from(_UNITS))


@st.composite
def strings(draw: st.DrawFn) -> str:
    plain = st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\\n')
    pieces = draw(st.lists(st.one_of(plain, st.sampled_from(_ESCAPES)), max_size=8))
    return '"' + "".join(pieces) + '"'


@st.composite
def regexes(draw: st.DrawFn) -> str:
    plain = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\n")
    escaped = st.builds(lambda c: "\\" + c, st.characters(blacklist_characters="\n"))
    first = draw(st.one_of(plain.filter(lambda c: c != "*"), escaped))
    rest = draw(st.lists(st.one_of(plain, escaped), max_size=6))
    flags = draw(st.from_regex(r"[a-z]{0,2}", fullmatch=True))
    return "/" + first + "".join(rest) + "/" + flags


def literals(depth: int = 2) -> st.SearchStrategy[str]:
    """What `let` accepts: strings, regexes, numbers, quantities and non-empty lists of them."""
    leaves = st.one_of(strings(), regexes(), numbers(), quantities)
    if depth <= 0:
        return leaves
    items = st.lists(literals(depth - 1), min_size=1, max_size=3)
    lists = st.builds(lambda xs, comma: "[" + ", ".join(xs) + comma + "]", items, _trailing_comma)
    return st.one_of(leaves, lists)


_trailing_comma = st.sampled_from(["", "", ","])


# ---- expressions ----------------------------------------------------------------
#
# An expression is drawn as (text, level): the loosest grammar level its text sits at
# (`..` is 1, atoms are 10, as in `fmlang.fmt.expr`). An operand whose level is looser than
# its operator allows is wrapped in parentheses; explicit `( )` around anything also appear.
# The parser, not this module, decides the tree; the text only has to parse.

RANGE, OR, AND, NOT, COMPARE, SUM, PRODUCT, UNARY, POSTFIX, ATOM = range(1, 11)
REACHES_RIGHT = 0  # `auto in x` would swallow what follows it, so as an operand it is wrapped
Part = tuple[str, int]


def expressions(max_leaves: int = 10, *, comments: bool = False) -> st.SearchStrategy[str]:
    """Expression text with every operator and literal kind, up to `max_leaves` atoms."""
    return _expressions(max_leaves, _Options(comments)).map(lambda part: part[0])


@cache
def _expressions(max_leaves: int, o: _Options) -> st.SearchStrategy[Part]:
    return st.recursive(_leaves(), lambda inner: _compound(inner, o), max_leaves=max_leaves)


def _leaves() -> st.SearchStrategy[Part]:
    texts = st.one_of(
        identifiers,
        numbers(),
        quantities,
        strings(),
        regexes(),
        st.sampled_from(["true", "false", "auto"]),
    )
    return st.tuples(texts, st.just(ATOM))


def _wrap(part: Part, level: int) -> str:
    text, own = part
    return f"({text})" if own < level else text


def _compound(inner: st.SearchStrategy[Part], o: _Options) -> st.SearchStrategy[Part]:
    binary_ops = [("or", OR), ("and", AND), ("+", SUM), ("-", SUM), ("*", PRODUCT), ("/", PRODUCT)]

    def binary(op_level: tuple[str, int], left: Part, right: Part) -> Part:
        op, level = op_level
        return f"{_wrap(left, level)} {op} {_wrap(right, level + 1)}", level

    def compare(op: str, left: Part, right: Part) -> Part:
        return f"{_wrap(left, SUM)} {op} {_wrap(right, SUM)}", COMPARE

    def ranged(low: Part, joiner: str, high: Part) -> Part:
        return f"{_wrap(low, OR)}{joiner}{_wrap(high, OR)}", RANGE

    def auto_range(low: Part, joiner: str, high: Part) -> Part:
        return f"auto in {_wrap(low, SUM)}{joiner}{_wrap(high, SUM)}", REACHES_RIGHT

    spaced = _inner_space(o)
    items = st.lists(st.tuples(spaced, inner), max_size=3)
    return st.one_of(
        st.builds(binary, st.sampled_from(binary_ops), inner, inner),
        st.builds(compare, st.sampled_from(_COMPARISONS), inner, inner),
        st.builds(ranged, inner, st.sampled_from(["..", " .. "]), inner),
        st.builds(lambda x: (f"not {_wrap(x, NOT)}", NOT), inner),
        st.builds(
            lambda sp, x: (f"-{sp}{_wrap(x, UNARY)}", UNARY), st.sampled_from(["", " "]), inner
        ),
        st.builds(lambda x, name: (f"{_wrap(x, POSTFIX)}.{name}", POSTFIX), inner, identifiers),
        st.builds(
            lambda f, args, comma: (
                f"{_wrap(f, POSTFIX)}({_arguments(args)}{comma if args else ''})",
                POSTFIX,
            ),
            inner,
            st.lists(st.tuples(spaced, st.one_of(st.none(), identifiers), inner), max_size=3),
            _trailing_comma,
        ),
        st.builds(
            lambda xs, comma: (
                "[" + ", ".join(ws + t for ws, (t, _) in xs) + (comma if xs else "") + "]",
                ATOM,
            ),
            items,
            _trailing_comma,
        ),
        st.builds(lambda x, ws: (f"({x[0]}{ws})", ATOM), inner, spaced),
        st.builds(lambda d: (f"auto in {_wrap(d, SUM)}", REACHES_RIGHT), inner),
        st.builds(auto_range, inner, st.sampled_from(["..", " .. "]), inner),
    )


def _arguments(args: list[tuple[str, str | None, Part]]) -> str:
    return ", ".join(ws + (f"{k} = " if k else "") + value for ws, k, (value, _) in args)


def _inner_space(o: _Options) -> st.SearchStrategy[str]:
    """Space inside brackets: sometimes a line break, sometimes a comment."""
    spaces = st.sampled_from(["", "", "\n  "])
    if not o.comments:
        return spaces
    return st.one_of(spaces, st.builds(lambda c: f" {c}\n  ", comment_texts))


# ---- statements -----------------------------------------------------------------


def _separators(o: _Options, commas: bool = True) -> st.SearchStrategy[str]:
    """Between two statements of a block: newline, `;`, `,`, a space, or a comment."""
    plain = ["\n  ", "\n  ", "\n\n  ", "; ", " "] + ([", "] if commas else [])
    if not o.comments:
        return st.sampled_from(plain)
    return st.one_of(
        st.sampled_from(plain),
        st.builds(lambda c: f"  {c}\n  ", comment_texts),
        st.builds(lambda c: f"\n  {c}\n  ", comment_texts),
    )


@st.composite
def _joined(
    draw: st.DrawFn, statements: list[tuple[str, bool]], o: _Options, *, hazards: bool = False
) -> str:
    """Statements (text, may be followed by `,`) joined by random separators."""
    out = ""
    for i, (text, _) in enumerate(statements):
        if i:
            separator = draw(_separators(o, commas=statements[i - 1][1]))
            if hazards and text.startswith(("(", "-", "/", ".")):
                separator = ";" + separator
            out += separator
        out += text
    return out


@st.composite
def _braced(draw: st.DrawFn, head: str, statements: list[tuple[str, bool]], o: _Options) -> str:
    hazards = head.startswith("constraints")
    body = draw(_joined(statements, o, hazards=hazards))
    opening = draw(_separators(o, commas=False)) if statements else " "
    closing = draw(_separators(o, commas=False)) if statements else ""
    return f"{head} {{{opening}{body}{closing}}}"


@st.composite
def _setting(draw: st.DrawFn, o: _Options, depth: int = 1) -> str:
    key = draw(keys)
    if depth > 0 and draw(st.integers(0, 4)) == 0:
        inner = draw(st.lists(_setting(o, depth - 1), max_size=3))
        return draw(_braced(key, [(s, True) for s in inner], o))
    equals = draw(st.sampled_from([" ", " = ", "="]))
    return key + equals + draw(expressions(8, **_flags(o)))


def _flags(o: _Options) -> dict[str, bool]:
    return {"comments": o.comments}


@st.composite
def _grant(draw: st.DrawFn) -> str:
    permissions = draw(st.lists(identifiers, min_size=1, max_size=3))
    principals = draw(st.lists(st.one_of(identifiers, strings()), min_size=1, max_size=3))
    return f"grant {', '.join(permissions)} to {', '.join(principals)}"


@st.composite
def _field(draw: st.DrawFn, o: _Options) -> str:
    text = f"{draw(keys)}: {draw(identifiers)}"
    args = draw(st.lists(identifiers, max_size=3))
    if args:
        text += f"[{', '.join(args)}]"
    text += "".join(f" @{tag}" for tag in draw(st.lists(identifiers, max_size=2)))
    if draw(st.booleans()):
        text += " = " + draw(expressions(8, **_flags(o)))
    if draw(st.integers(0, 3)) == 0:  # column options: `{ on_cast_error = null, … }`
        options = draw(st.lists(_setting(o, 0), min_size=0, max_size=2))
        text += " { " + ", ".join(options) + " }"
    return text


@st.composite
def _clean_rule(draw: st.DrawFn, o: _Options) -> str:
    columns = ", ".join(draw(st.lists(identifiers, min_size=1, max_size=3)))
    names = ", ".join(draw(st.lists(identifiers, min_size=1, max_size=3)))
    near = draw(st.sampled_from(["", " near 0.9", " near 90%"]))
    condition = draw(expressions(8, **_flags(o)))
    return draw(
        st.sampled_from(
            [
                f"dedupe {columns}{near}",
                f"drop where {condition}",
                f"keep where {condition}",
                f"drop {columns}",
                f"normalize {columns}: {names}",
                f"redact {names} in {columns}",
            ]
        )
    )


@st.composite
def _split(draw: st.DrawFn, o: _Options) -> str:
    shares = st.one_of(numbers(), quantities)
    parts = draw(st.lists(st.tuples(identifiers, shares), max_size=3))
    statements = [(f"{name} {share}", True) for name, share in parts]
    if draw(st.booleans()):
        statements.append(("by " + draw(expressions(8, **_flags(o))), False))
    return draw(_braced("split", statements, o))


@st.composite
def _dataset_statement(draw: st.DrawFn, o: _Options) -> tuple[str, bool]:
    kind = draw(st.sampled_from(["setting", "setting", "grant", "schema", "clean", "split"]))
    if kind == "setting":
        return draw(_setting(o)), True
    if kind == "grant":
        return draw(_grant()), False
    if kind == "schema":
        fields = draw(st.lists(_field(o), max_size=4))
        return draw(_braced("schema", [(f, True) for f in fields], o)), True
    if kind == "clean":
        rules = draw(st.lists(_clean_rule(o), max_size=4))
        return draw(_braced("clean", [(r, False) for r in rules], o)), True
    return draw(_split(o)), True


@st.composite
def _labels_statement(draw: st.DrawFn, o: _Options) -> tuple[str, bool]:
    kind = draw(st.sampled_from(["setting", "grant", "lf", "lf"]))
    if kind == "setting":
        return draw(_setting(o)), True
    if kind == "grant":
        return draw(_grant()), False
    text = f"lf {draw(identifiers)}: {draw(expressions(8, **_flags(o)))}"
    if draw(st.booleans()):
        text += f" -> {draw(identifiers)}"
    return text, True


@st.composite
def _body_statement(draw: st.DrawFn, o: _Options) -> tuple[str, bool]:
    if draw(st.integers(0, 5)) == 0:
        return draw(_grant()), False
    return draw(_setting(o)), True


@st.composite
def _constraint(draw: st.DrawFn, o: _Options) -> tuple[str, bool]:
    text = draw(expressions(8, **_flags(o)))
    if draw(st.booleans()):
        text += " on " + draw(expressions(4, **_flags(o)))
    return text, True


@st.composite
def _item(draw: st.DrawFn, o: _Options) -> str:
    kind = draw(st.sampled_from(_ITEM_KINDS))
    name = draw(identifiers)
    if kind == "import":
        path = ".".join(draw(st.lists(identifiers, min_size=1, max_size=3)))
        names = draw(st.lists(identifiers, min_size=1, max_size=3))
        return draw(
            st.sampled_from(
                [
                    f"import {path}",
                    f"import {path}.{{{', '.join(names)}}}",
                    f'import "{name}.fm"',
                ]
            )
        )
    if kind == "let":
        return f"let {name} = {draw(literals())}"
    statement = {
        "dataset": _dataset_statement,
        "labels": _labels_statement,
        "constraints": _constraint,
    }.get(kind, _body_statement)
    body = draw(st.lists(statement(o), max_size=4))
    head = f"{kind} {name}"
    if kind == "labels":
        source = ".".join(draw(st.lists(identifiers, min_size=1, max_size=2)))
        head += f" on {source}"
    return draw(_braced(head, body, o))


@st.composite
def specs(
    draw: st.DrawFn,
    *,
    comments: bool = True,
    max_items: int = 5,
) -> str:
    """A whole `.fm` file as text."""
    o = _Options(comments)
    items = draw(st.lists(_item(o), min_size=1, max_size=max_items))
    between = st.sampled_from(["\n", "\n\n", " "])
    if comments:
        between = st.one_of(
            between,
            st.builds(lambda c: f"  {c}\n", comment_texts),
            st.builds(lambda c, gap: f"\n{gap}{c}\n", comment_texts, st.sampled_from(["", "\n"])),
        )
    text = draw(st.sampled_from(["", "\n"]))
    if comments and draw(st.booleans()):
        text += draw(comment_texts) + "\n"
    for i, item in enumerate(items):
        text += (draw(between) if i else "") + item
    if comments and draw(st.booleans()):
        text += draw(st.sampled_from(["  ", "\n", "\n\n"])) + draw(comment_texts)
    return text + draw(st.sampled_from(["", "\n"]))

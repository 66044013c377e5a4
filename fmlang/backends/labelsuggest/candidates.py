"""Candidate primitives for suggested labeling functions, from the sample's text.

Each candidate is a condition on one text column, held twice: as the `.fm` source the user
will read (`CONTENT ~ /\\bcheck out\\b/i`) and as the IR expression the label-matrix lowering
compiles, so its firing rows are computed by the same SQL a real labeling function runs.
Keywords are ASCII letters and digits only, so the patterns need no escaping and mean the
same in every regex engine.

`restrict` limits a candidate to the rows where none of another class's chosen functions
matches (`words(CONTENT) < 12 and CONTENT !~ /\\bcheck\\b|https?:\\/\\/|www\\./i`): a
short comment is ham unless it has spam's marks. On YouTube it lifts "under 12 words, no
link" from 71% to 93% accurate on the train split's 1,409 gold labels (`fmc label suggest
… --seed 0`, then the labels stage's analysis of the suggested file): most of its errors
were spam the spam functions catch.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from fmlang.ir.expr import BinOp, Call, ColumnRef, Expr, Lit, RegexLit

_TOKEN = re.compile(r"[a-z0-9]+")
MAX_KEYWORDS = 400
"""At most this many keyword candidates (the most frequent in the sample), so the
label-matrix query stays small."""
PREFIX_MIN = 4
# English function words: common everywhere, so as single keywords they fit the sample's
# noise, not its classes (word pairs that contain them, `my channel`, stay candidates).
_FUNCTION_WORDS = (
    "a about after all also am an and any are as at be because been but by can could did do "
    "does for from get got had has have he her him his how i if in into is it its just me "
    "more my no not now of on one only or our out so some than that the their them then "
    "there these they this to too up us was we were what when which who will with would you "
    "your"
)
STOPWORDS = frozenset(_FUNCTION_WORDS.split())

# Shapes that say something about a text whatever its words: (name, pattern, flags).
SHAPES = (
    ("url", r"https?:\/\/|www\.", "i"),
    ("domain", r"\b[a-z0-9-]+\.(com|net|org|ly|io|be)\b", "i"),
    ("long_number", r"[0-9]{5,}", ""),
    ("exclaims", r"!{2,}", ""),
    ("shouting", r"\b[A-Z]{4,}\b", ""),
    ("question", r"\?", ""),
    ("money", r"[$€£]|\b(dollars?|money|cash)\b", "i"),
)
LINK = ("link", r"https?:\/\/|www\.|\.(com|net|org|ly|io|be)\b", "i")
WORD_COUNTS = ((3, "<"), (5, "<"), (8, "<"), (12, "<"), (20, ">"), (30, ">"), (50, ">"))


@dataclass(frozen=True)
class Candidate:
    """One condition: `name` (a valid, unique labeling-function name stem), its `.fm`
    `source` and its IR `expr`; `kind` is keyword, prefix, shape or length. A candidate
    made by `restrict` names the candidate it restricts (`base`) and the class whose functions
    it excludes (`unless`)."""

    name: str
    kind: str
    source: str
    expr: Expr
    base: str = ""
    unless: str = ""
    excludes: tuple[RegexLit, ...] = ()  # the patterns `restrict` excluded, in `source` order

    @property
    def root(self) -> str:
        """The name of the unrestricted candidate this one derives from."""
        return self.base or self.name

    @property
    def regex(self) -> RegexLit | None:
        """The pattern of a plain `COL ~ /…/` candidate (keyword, prefix or shape)."""
        expr = self.expr
        if isinstance(expr, BinOp) and expr.op == "~" and isinstance(expr.right, RegexLit):
            return expr.right
        return None


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def candidates(texts: Iterable[str], column: str, min_rows: int = 2) -> list[Candidate]:
    """Every candidate for `column`, from the sample's `texts`: keywords and word pairs in
    at least `min_rows` texts, prefixes shared by two or more of those keywords, the shapes
    and the word-count thresholds. Deterministic: sorted by frequency, then text."""
    rows = [set(_grams(tokens(t))) for t in texts]
    counts = Counter(gram for row in rows for gram in row)
    frequent = sorted(
        (g for g, n in counts.items() if n >= min_rows and g not in STOPWORDS),
        key=lambda g: (-counts[g], g),
    )
    keywords = frequent[:MAX_KEYWORDS]
    out = [keyword(column, gram) for gram in keywords]
    out += [_prefix(column, p) for p in _prefixes(rows, min_rows)]
    out += [_shape(column, name, pattern, flags) for name, pattern, flags in SHAPES]
    out += [_word_count(column, n, op) for n, op in WORD_COUNTS]
    out += [_plain_short(column, n) for n, op in WORD_COUNTS if op == "<"]
    return out


def _grams(words: list[str]) -> list[str]:
    return words + [f"{a} {b}" for a, b in pairwise(words)]


def _prefixes(rows: list[set[str]], min_rows: int) -> list[str]:
    """Prefixes (at least PREFIX_MIN letters) that two or more distinct words of the texts
    share, in at least `min_rows` texts together: `subscrib` from `subscribe` and
    `subscribed`. The longest prefix of each group of words; not a word itself, nor a
    function word: `than`, shared by `thank` and `thanks`, would fire on every "more than"
    (on WRENCH's YouTube test split, seeds 0-23, it voted spam on 22 ham rows the EM label
    model then got wrong; counted with a script that was not kept). Linear in the texts'
    letters: a prefix's group is the run of sorted words that start with it."""
    words = sorted({w for row in rows for w in row if " " not in w and w not in STOPWORDS})
    excluded = set(words) | STOPWORDS
    shared: Counter[str] = Counter()
    for word in words:
        for end in range(PREFIX_MIN, len(word)):
            shared[word[:end]] += 1
    longest: dict[tuple[int, int], str] = {}  # (first word, count) of a group -> its prefix
    for prefix, n in shared.items():
        if n >= 2 and prefix not in excluded and prefix.isalpha():
            group = (bisect_left(words, prefix), n)
            if len(prefix) > len(longest.get(group, "")):
                longest[group] = prefix
    kept = set(longest.values())
    texts: Counter[str] = Counter()
    for row in rows:
        texts.update(kept.intersection(
            w[:end] for w in row if " " not in w and w not in STOPWORDS
            for end in range(PREFIX_MIN, len(w))
        ))  # fmt: skip
    return sorted(prefix for prefix in kept if texts[prefix] >= min_rows)


def _regex(column: str, pattern: str, flags: str) -> tuple[str, Expr]:
    source = f"{column} ~ /{pattern}/{flags}"
    regex = RegexLit(pattern=pattern, flags=flags)
    return source, BinOp(op="~", left=ColumnRef(name=column), right=regex)


def keyword(column: str, gram: str) -> Candidate:
    pattern = r"\b" + gram + r"\b"
    source, expr = _regex(column, pattern, "i")
    return Candidate("kw_" + gram.replace(" ", "_"), "keyword", source, expr)


def _prefix(column: str, prefix: str) -> Candidate:
    source, expr = _regex(column, r"\b" + prefix + r"[a-z]*", "i")
    return Candidate(f"pre_{prefix}", "prefix", source, expr)


def _shape(column: str, name: str, pattern: str, flags: str) -> Candidate:
    source, expr = _regex(column, pattern, flags)
    return Candidate(f"re_{name}", "shape", source, expr)


def _word_count(column: str, n: int, op: str) -> Candidate:
    words = Call(func="words", args=(ColumnRef(name=column),))
    name = f"words_{'under' if op == '<' else 'over'}_{n}"
    expr = BinOp(op=op, left=words, right=Lit(value=n))
    return Candidate(name, "length", f"words({column}) {op} {n}", expr)


def _plain_short(column: str, n: int) -> Candidate:
    """Short and without a link: `words(COL) < n and COL !~ /…/i`."""
    name, pattern, flags = LINK
    words = BinOp(op="<", left=Call(func="words", args=(ColumnRef(name=column),)),
                  right=Lit(value=n))  # fmt: skip
    link = BinOp(op="!~", left=ColumnRef(name=column), right=RegexLit(pattern=pattern,
                                                                      flags=flags))  # fmt: skip
    source = f"words({column}) < {n} and {column} !~ /{pattern}/{flags}"
    return Candidate(f"words_under_{n}_no_{name}", "length", source,
                     BinOp(op="and", left=words, right=link))  # fmt: skip


def restrict(base: Candidate, column: str, others: Sequence[Candidate], label: str) -> Candidate:
    """`base`, except on the rows where a pattern of `others` (functions of class `label`)
    matches: one `column !~ /p1|p2|…/flags` per set of flags, in the order of `others`.
    Candidates of `others` without a pattern (length thresholds) are left out."""
    groups: dict[str, list[str]] = {}
    for other in others:
        regex = other.regex
        if regex is not None:
            groups.setdefault(regex.flags, []).append(regex.pattern)
    source, expr = base.source, base.expr
    excludes = tuple(RegexLit(pattern="|".join(p), flags=f) for f, p in groups.items())
    for regex in excludes:
        source += f" and {column} !~ /{regex.pattern}/{regex.flags}"
        excluded = BinOp(op="!~", left=ColumnRef(name=column), right=regex)
        expr = BinOp(op="and", left=expr, right=excluded)
    name = f"{base.name}_unless_{label}"
    return Candidate(name, base.kind, source, expr, base.name, label, excludes)

"""Literal prefilters for regexes: strings of which every match contains at least one.

`x ~ /https?:\\/\\/\\S+|www\\.\\S+/i` can only match a row whose lower-cased text contains
"http" or "www.", so the label-matrix query runs the regex on those rows alone (a substring
search is many times cheaper than the regex engine, and most rows fail it). The result is
exactly the regex's: the prefilter only skips rows where the regex cannot match.

The requirement is computed from the pattern's syntax tree (Python's own parser, which reads
the RE2 subset the checker allows with the same literals; patterns it cannot parse, or with
POSIX classes `[[:alpha:]]` that it would misread as literals, get no prefilter): in a
sequence, a run of exactly known parts (literals, small classes and alternations, optional
parts: `my (page|videos?)` is one of "my page", "my video", "my videos"), or a group, an
alternation (one requirement per branch, all of them needed) or a repetition of at least
one whose body has a requirement.

Case-insensitive patterns are searched in the lower-cased text. That is exact for ASCII
characters other than `s`: RE2's `(?i)s` also matches the long s U+017F, which `lower()`
leaves as it is, so an `s` stands for both; any non-ASCII character breaks a literal run
(`(?i)k` matches the Kelvin sign U+212A too, which both engines lower-case to `k`).

Among the requirements a pattern has, the one searched is the longest (rarest) with the
fewest alternatives (each one more substring search of every row).
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python 3.11+ (private, so checked: without a parser, no prefilters)
    from re import _constants as _c
    from re import _parser as _p
except ImportError:  # pragma: no cover - Python 3.10
    try:
        import sre_constants as _c
        import sre_parse as _p
    except ImportError:
        _c = _p = None

MAX_ALTERNATIVES = 4  # more substrings to search than this costs more than it saves
MAX_EXACT = 16  # the most strings an exactly known part of a pattern may stand for
# `(?i)s` also matches the long s U+017F, which `lower()` keeps as it is: either may be
# there. (The Kelvin sign U+212A that `(?i)k` matches lower-cases to `k`.)
_UNSAFE_FOLDS = frozenset("sS")


def required_literals(pattern: str) -> tuple[tuple[str, ...], bool] | None:
    """`(literals, lower)`: every match contains one of `literals` (in the lower-cased text
    when `lower`); None when no useful requirement is known."""
    if _p is None or "[:" in pattern:
        return None
    try:
        parsed = _p.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    found = _sequence(list(parsed), ignore_case)
    if not found or min(len(s) for s in found) == 0:
        return None
    return tuple(sorted(found)), ignore_case


def _minimal(strings: frozenset[str]) -> frozenset[str]:
    """Containing "my video" implies containing "my video" within "my videos": the longer
    one adds nothing to search for."""
    return frozenset(s for s in strings if not any(t != s and t in s for t in strings))


def _score(strings: frozenset[str]) -> float:
    """Longer strings are rarer; each alternative is one more search of every row."""
    return min(len(s) for s in strings) - 1.5 * (len(strings) - 1)


def _char(code: int, ignore_case: bool) -> frozenset[str] | None:
    """What the lower-cased text holds where the character matched (the character itself
    when case matters)."""
    ch = chr(code)
    if not ignore_case:
        return frozenset([ch])
    if ch in _UNSAFE_FOLDS:
        return frozenset(["s", "\u017f"])
    return frozenset([ch.lower()]) if ch.isascii() else None


def _sequence(items: list[tuple[Any, Any]], ignore_case: bool) -> frozenset[str] | None:
    """The best requirement of a concatenation: the strings of a run of exactly known parts
    (literals, small classes and alternations, optional parts), concatenated, or one part's."""
    candidates: list[frozenset[str]] = []
    run: frozenset[str] | None = frozenset([""])
    for op, av in items:
        exact = _exact(op, av, ignore_case)
        if exact is not None and run is not None:
            if "" not in run:
                candidates.append(run)  # a prefix of the run is a requirement too
            product = frozenset(a + b for a in run for b in exact)
            if len(product) <= MAX_EXACT:
                run = product
                continue
        if run is not None and "" not in run:
            candidates.append(run)
        run = exact
        if exact is None:
            found = _item(op, av, ignore_case)
            if found:
                candidates.append(found)
    if run is not None and "" not in run:
        candidates.append(run)
    useful = [m for m in map(_minimal, candidates) if len(m) <= MAX_ALTERNATIVES]
    return max(useful, key=_score) if useful else None


def _exact(op: Any, av: Any, ignore_case: bool) -> frozenset[str] | None:
    """Every string this part of a pattern can match, when there are only a few."""
    if op is _c.LITERAL:
        return _char(av, ignore_case)
    if op is _c.IN:
        chars: set[str] = set()
        for member_op, member in av:
            found = _char(member, ignore_case) if member_op is _c.LITERAL else None
            if found is None:
                return None
            chars |= found
        return frozenset(chars) if 0 < len(chars) <= MAX_EXACT else None
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, body = av
        if (add_flags | del_flags) & re.IGNORECASE:
            return None
        return _exact_sequence(list(body), ignore_case)
    if op is _c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            found = _exact_sequence(list(branch), ignore_case)
            if found is None:
                return None
            union |= found
        return frozenset(union) if len(union) <= MAX_EXACT else None
    if op is _c.MAX_REPEAT and av[0] == 0 and av[1] == 1:  # x?
        body = _exact_sequence(list(av[2]), ignore_case)
        return body | {""} if body is not None and len(body) < MAX_EXACT else None
    return None


def _exact_sequence(items: list[tuple[Any, Any]], ignore_case: bool) -> frozenset[str] | None:
    strings = frozenset([""])
    for op, av in items:
        part = _exact(op, av, ignore_case)
        if part is None:
            return None
        strings = frozenset(a + b for a in strings for b in part)
        if len(strings) > MAX_EXACT:
            return None
    return strings


def _item(op: Any, av: Any, ignore_case: bool) -> frozenset[str] | None:
    """The requirement of a part that is not exactly known: a group's, every branch's, or
    a repetition's body when it repeats at least once."""
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, body = av
        if (add_flags | del_flags) & re.IGNORECASE:
            return None
        return _sequence(list(body), ignore_case)
    if op is _c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            found = _sequence(list(branch), ignore_case)
            if not found:
                return None
            union |= found
        return frozenset(union) if len(union) <= MAX_ALTERNATIVES else None
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)):
        low, _high, body = av
        return _sequence(list(body), ignore_case) if low >= 1 else None
    return None

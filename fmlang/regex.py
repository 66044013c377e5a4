"""The one regex dialect of specs: RE2 syntax, with RE2's meaning, on every engine.

A spec's regexes run in DuckDB (RE2 itself), in Spark SQL (java.util.regex) and are checked
by `fmc check`. So the dialect is defined once, as RE2 defines it (docs/reference.md,
"Regular expressions"), and this module is its single reader:

- `parse(pattern)` walks the pattern as RE2 parses it and refuses what RE2 refuses or what
  fmc leaves out (`\\C`, `\\B`, the `U` flag), with the position of the offending part and
  a fix (`\\Z` → `\\z`); it also gives the shortest match (`count` refuses patterns that
  can match the empty string). The checker then compiles every pattern with RE2 itself
  (`re2_problem`, the `google-re2` package) when it is installed, which is authoritative.
- The same walk writes the java.util.regex pattern that matches exactly the same strings
  (`to_java`): the ASCII classes `\\d \\w \\s \\b` spelled out (Java's `\\b` is
  Unicode-aware, its `\\s` includes `\\v`), `.`, `^` and `$` spelled out (Java's line
  terminators include `\\r`, U+0085 and U+2028, and its `$` matches before a final newline),
  `(?i)` as Unicode case folding with RE2's classes (Java folds İ and ı into i; RE2 folds ſ
  and the Kelvin sign into s and k, which Java's ranges do not), named groups unnamed,
  literals written as code points, negated classes inside classes as their complements and
  `[` and `&` escaped there (Java nests and intersects classes). tests/test_data_correctness.py
  checks the result against DuckDB on Unicode text, one JVM call.
- It also writes the Rust `regex` pattern (what polars runs, `to_rust`) that matches the
  same strings, or None where no exact one is known: the ASCII classes spelled out (Rust's
  `\\d \\w \\s` are Unicode, its `\\s` includes `\\v` and U+00A0), `\\b` as Rust's ASCII
  boundary `(?-u:\\b)`, `^`/`$` as `\\A`/`\\z` or `(?m:^)`/`(?m:$)`. Rust folds case as RE2
  does (simple case folding) but with a newer Unicode table, so under `i` only ASCII
  literals (their folds, ſ and the Kelvin sign included, agree) and caseless characters
  (`€`, `—`) are translated; a non-ASCII letter under `i` and the Unicode classes `\\p{…}`
  (whose tables differ by version) have no Rust form. Classes are case-folded by the walk
  and matched case-sensitively (`(?-i:[…])`), and ranges either side of the surrogates
  joined, since Rust's parser mis-negates a class split there. tests/test_lf_polars.py
  checks it against DuckDB.

Pure Python, no import of RE2, Java or Rust: the lowering uses it to emit Spark SQL and
polars expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# RE2's Perl and POSIX classes are ASCII-only; these are their exact members, as ranges.
Ranges = tuple[tuple[int, int], ...]


def _r(*spans: str) -> Ranges:
    return tuple((ord(x[0]), ord(x[-1])) for x in spans)


_WORD = _r("09", "AZ", "_", "az")
_PERL: dict[str, Ranges] = {"d": _r("09"), "w": _WORD, "s": _r("\t\n", "\f\r", " ")}
_POSIX: dict[str, Ranges] = {
    "alnum": _r("09", "AZ", "az"), "alpha": _r("AZ", "az"), "ascii": ((0, 0x7F),),
    "blank": _r("\t", " "), "cntrl": ((0, 0x1F), (0x7F, 0x7F)), "digit": _r("09"),
    "graph": _r("!~"), "lower": _r("az"), "print": _r(" ~"),
    "punct": _r("!/", ":@", "[`", "{~"), "space": _r("\t\r", " "), "upper": _r("AZ"),
    "word": _WORD, "xdigit": _r("09", "AF", "af"),
}  # fmt: skip
MAX_CODE = 0x10FFFF
_I_CLASS = (0x49, 0x69, 0x130, 0x131)  # I, i, İ, ı: one case class in Java, not in RE2
# The non-ASCII case partners RE2 gives ASCII letters (s: ſ, k: the Kelvin sign).
_FOLD_PARTNERS = {0x73: 0x17F, 0x53: 0x17F, 0x6B: 0x212A, 0x4B: 0x212A}
_SURROGATES = (0xD800, 0xDFFF)  # never in text: left out of complements


def _items(ranges: Ranges) -> str:
    return "".join(
        _literal(lo) if lo == hi else f"{_literal(lo)}-{_literal(hi)}" for lo, hi in ranges
    )


def _complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    edge = 0
    for lo, hi in sorted((*ranges, _SURROGATES)):
        if lo > edge:
            out.append((edge, lo - 1))
        edge = max(edge, hi + 1)
    if edge <= MAX_CODE:
        out.append((edge, MAX_CODE))
    return tuple(out)


_CONTROL = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}
# Unicode general categories Java spells as RE2 does; other names are scripts (`\p{IsGreek}`).
_CATEGORIES = {
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn",
    "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk",
    "Sm", "So", "Z", "Zl", "Zp", "Zs",
}  # fmt: skip
_HINTS = {
    "Z": "RE2 writes the end of the text `\\z`",
    "G": "RE2 has no `\\G`; anchor with `^` or `\\A`",
    "h": "write the class out, e.g. `[ \\t]`",
    "R": "write the line break out, e.g. `\\r?\\n`",
    "K": "RE2 has no `\\K`; match the prefix in a group instead",
    "X": "RE2 has no `\\X`; match `\\pM*` after a character",
    "N": "RE2 has no `\\N`; write `[^\\n]`",
    "e": "write the escape character as `\\x1b`",
    "u": "write a code point as `\\x{e9}`",
    "U": "write a code point as `\\x{1f600}`",
    "C": "`\\C` matches a byte, not a character: use `.`",
}
MAX_REPEAT = 1000  # RE2 refuses a counted repetition above 1000


class _NoRust(Exception):
    """The pattern has no Rust form known to match exactly what RE2 matches."""


class RegexError(ValueError):
    """A pattern RE2 (or fmc's dialect) refuses: `start`/`end` index the pattern."""

    def __init__(self, message: str, start: int, end: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = max(end, start + 1)
        self.hint = hint


@dataclass
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False


@dataclass
class _Scanner:
    pattern: str
    pos: int = 0
    out: list[str] = field(default_factory=list)
    stack: list[_Flags] = field(default_factory=list)
    flags: _Flags = field(default_factory=_Flags)
    last: int | None = None  # the shortest match of the last item, when it can be repeated
    # per open group: the shortest match of its finished alternatives, and of the current one
    frames: list[list[int | None]] = field(default_factory=lambda: [[None, 0]])
    rust: bool = False  # write Rust `regex` syntax instead of Java's

    # ---- helpers -------------------------------------------------------------

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.pattern[index] if index < len(self.pattern) else ""

    def fail(
        self, message: str, start: int, end: int | None = None, hint: str | None = None
    ) -> RegexError:
        return RegexError(message, start, end if end is not None else self.pos, hint)

    def atom(self, java: str, length: int = 1) -> None:
        """A repeatable item matching at least `length` characters."""
        self.out.append(java)
        self.last = length
        self.frames[-1][1] = (self.frames[-1][1] or 0) + length

    def zero_width(self, java: str) -> None:
        self.out.append(java)
        self.last = None

    def folded(self, java: str, members: Ranges, negated: bool) -> str:
        """Java's `(?iu)` makes i, I, U+0130 (İ) and U+0131 (ı) one case class; RE2 folds i
        with I and the other two with nothing. Under `i`, a class (or letter) that holds any
        of the four matches all four in Java: the ones RE2 would not match are taken out of
        it (or, for a negated class, put back)."""
        if not self.flags.i or self.rust:  # Rust, like RE2, folds İ and ı with nothing
            return java
        held = {c for c in _I_CLASS if any(lo <= c <= hi for lo, hi in members)}
        if not held:
            return java
        re2 = held | ({0x49, 0x69} if held & {0x49, 0x69} else set())
        extra = set(_I_CLASS) - re2
        if not extra:
            return java
        chars = "".join(_literal(c) for c in sorted(extra))
        if negated:
            return f"(?:{java}|(?-iu:[{chars}]))"
        return f"(?:(?-iu:(?![{chars}])){java})"

    def ascii_under_i(self, low: int, high: int) -> None:
        """Rust folds non-ASCII letters with a newer Unicode table than RE2's: under `i`,
        the characters written in the pattern have a Rust form when they are ASCII, ſ or the
        Kelvin sign (which fold with s and k in both), or caseless (`_caseless`)."""
        if not (self.rust and self.flags.i) or high < 0x80:
            return
        if low == high and low in _ASCII_PARTNERS:
            return
        if high - low > 0x800 or not all(_caseless(c) for c in range(max(low, 0x80), high + 1)):
            raise _NoRust

    def rust_class(self, members: Ranges, negated: bool) -> str:
        """A class in Rust syntax, case-folded here (under `i`, its members are ASCII or
        complements of folded ASCII classes) and matched case-sensitively, so that only
        single ASCII letters are left to Rust's folding."""
        ranges = _fold_ascii(members) if self.flags.i else members
        text = _class_of(_merged(ranges), negated)
        return f"(?-i:{text})" if self.flags.i else text

    def closed(self, ranges: Ranges) -> Ranges:
        """Under `i`, an ASCII class with the non-ASCII letters RE2 folds into it, so that
        its complement (`\\W` inside a class) leaves them out as RE2's does."""
        if not self.flags.i:
            return ranges
        if self.rust:
            return _fold_ascii(ranges)
        extra = {
            partner
            for code, partner in _FOLD_PARTNERS.items()
            if any(lo <= code <= hi for lo, hi in ranges)
        }
        return tuple(sorted((*ranges, *((c, c) for c in extra))))

    # ---- the walk ------------------------------------------------------------

    def run(self) -> str:
        while self.pos < len(self.pattern):
            self.item()
        if self.stack:
            raise self.fail(
                "missing `)`", len(self.pattern) - 1, len(self.pattern), "close every group"
            )
        return "".join(self.out)

    def shortest(self) -> int:
        best, current = self.frames[-1]
        return min(x for x in (best, current) if x is not None)

    def item(self) -> None:
        ch, start = self.peek(), self.pos
        if ch == "\\":
            self.escape()
        elif ch == "[":
            self.atom(self.char_class())
        elif ch == "(":
            self.group()
        elif ch == ")":
            if not self.stack:
                raise self.fail("unmatched `)`", start, start + 1, "escape it as `\\)`")
            self.flags = self.stack.pop()
            self.pos += 1
            length = self.shortest()
            self.frames.pop()
            self.atom(")", length)
        elif ch in "*+?" or (ch == "{" and self.counted() is not None):
            self.repeat(start, ch)
        elif ch == "." and self.rust:
            self.pos += 1
            dot = ((0, MAX_CODE),) if self.flags.s else ((10, 10),)  # all, or all but \n
            self.atom(self.rust_class(dot, not self.flags.s))
        elif ch == ".":
            self.pos += 1
            self.atom(_ANY if self.flags.s else "[^\\n]")
        elif ch == "^":
            self.pos += 1
            multiline = "(?m:^)" if self.rust else "(?<![^\\n])"
            self.zero_width(multiline if self.flags.m else "\\A")
        elif ch == "$":
            self.pos += 1
            multiline = "(?m:$)" if self.rust else "(?![^\\n])"
            self.zero_width(multiline if self.flags.m else "\\z")
        elif ch == "|":
            self.pos += 1
            frame = self.frames[-1]
            frame[0] = min(x for x in (frame[0], frame[1]) if x is not None)
            frame[1] = 0
            self.zero_width("|")
        else:
            self.pos += 1
            self.letter(ord(ch))

    def letter(self, code: int) -> None:
        self.ascii_under_i(code, code)
        self.atom(self.folded(_literal(code), ((code, code),), False))

    def counted(self) -> tuple[int, int | None, int] | None:
        """`{n}`, `{n,}` or `{n,m}` at the position: (n, m, length); None when the brace is
        a literal, as RE2 reads `{` that does not start a counted repetition."""
        text = self.pattern[self.pos :]
        close = text.find("}")
        if close < 2:
            return None
        body = text[1:close]
        low, comma, high = body.partition(",")
        if not low.isdigit() or not (high.isdigit() or high == "") or not low.isascii():
            return None
        if high and not high.isascii():
            return None
        if comma and not high:
            return int(low), None, close + 1
        return int(low), int(high) if comma else int(low), close + 1

    def repeat(self, start: int, ch: str) -> None:
        if self.last is None:
            raise self.fail(
                f"missing argument to repetition operator `{ch}`",
                start,
                start + 1,
                f"escape it as `\\{ch}` to match it literally",
            )
        if ch == "{":
            low, high, length = self.counted() or (0, None, 1)
            if low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or high < low)):
                raise self.fail(
                    f"invalid repetition size `{self.pattern[start : start + length]}`",
                    start,
                    start + length,
                    f"counts go up to {MAX_REPEAT}, low before high",
                )
            self.out.append(self.pattern[start : start + length])
            self.pos += length
        else:
            low = 1 if ch == "+" else 0
            self.out.append(ch)
            self.pos += 1
        self.frames[-1][1] = (self.frames[-1][1] or 0) + self.last * (low - 1)
        if self.peek() == "+":
            raise self.fail(
                "possessive repetition (`*+`, `++`, `?+`) is not RE2",
                start,
                self.pos + 1,
                "drop the `+`: RE2 never backtracks anyway",
            )
        if self.peek() == "?":
            self.out.append("?")
            self.pos += 1
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self.counted()):
            raise self.fail(
                "bad repetition operator: a repetition is repeated",
                start,
                self.pos + 1,
                "put the inner repetition in a group `(?:…)`",
            )
        self.last = None

    def group(self) -> None:
        start = self.pos
        rest = self.pattern[start:]
        self.stack.append(_Flags(self.flags.i, self.flags.m, self.flags.s))
        self.frames.append([None, 0])
        self.last = None
        if not rest.startswith("(?"):
            self.pos += 1
            self.out.append("(")
            return
        for prefix, what in (
            ("(?=", "lookahead"),
            ("(?!", "lookahead"),
            ("(?<=", "lookbehind"),
            ("(?<!", "lookbehind"),
            ("(?>", "atomic group"),
            ("(?P=", "backreference"),
            ("(?P>", "recursion"),
            ("(?#", "comment group"),
        ):
            if rest.startswith(prefix):
                raise self.fail(
                    f"a {what} `{prefix}…)` is not RE2 syntax",
                    start,
                    start + len(prefix),
                    "RE2 matches in linear time and has no lookarounds, "
                    "backreferences or atomic groups: rewrite the pattern, or "
                    "use a Python labeling function",
                )
        for prefix in ("(?P<", "(?<"):
            if rest.startswith(prefix):
                close = rest.find(">")
                name = rest[len(prefix) : close] if close > 0 else ""
                if not name or not all(c.isalnum() or c == "_" for c in name):
                    raise self.fail(
                        "invalid named capture group",
                        start,
                        start + (close + 1 if close > 0 else len(prefix)),
                        "write `(?P<name>…)` with a word for the name",
                    )
                self.pos += close + 1
                self.out.append("(")
                return
        self.flag_group(start)

    def flag_group(self, start: int) -> None:
        index, on = start + 2, True
        new = _Flags(self.flags.i, self.flags.m, self.flags.s)
        seen_flag = seen_minus = False
        while index < len(self.pattern):
            c = self.pattern[index]
            if c in "ims":
                setattr(new, c, on)
                seen_flag = True
            elif c == "U":
                raise self.fail(
                    "the `U` (ungreedy) flag is not supported",
                    index,
                    index + 1,
                    "make each repetition lazy with `?` instead (`.*?`)",
                )
            elif c == "-" and not seen_minus:
                on, seen_minus, seen_flag = False, True, False
            elif c in ":)" and (seen_flag or (c == ":" and not seen_minus)):
                break
            else:
                raise self.fail(
                    "invalid or unsupported group flags",
                    start,
                    index + 1,
                    "flags are i, m and s: `(?i)`, `(?i:…)`, `(?-i)`",
                )
            index += 1
        else:
            raise self.fail("missing `)`", start, index, "close the flag group")
        java = _java_case(self.flags.i, new.i, self.rust)
        if self.pattern[index] == ")":  # `(?i)`: the rest of the enclosing group
            self.stack.pop()
            self.frames.pop()
            self.flags = new
            self.out.append(f"(?{java})" if java else "")
        else:  # `(?i:…)`
            self.flags = new
            self.out.append(f"(?{java}:" if java else "(?:")
        self.pos = index + 1

    def escape(self) -> None:
        start = self.pos
        c = self.peek(1)
        if not c:
            raise self.fail("trailing `\\`", start, start + 1, "escape a backslash as `\\\\`")
        self.pos += 2
        if c in "dwsDWS" and self.rust:
            self.atom(self.rust_class(_PERL[c.lower()], c.isupper()))
        elif c in "dwsDWS":
            ranges, negated = _PERL[c.lower()], c.isupper()
            self.atom(self.folded(_class_of(ranges, negated), ranges, negated))
        elif c == "b" and self.rust:  # ASCII word characters, whatever the case flag
            self.zero_width("(?-u:\\b)")
        elif c == "b":
            self.zero_width(f"(?-iu:{_WORD_BOUNDARY})" if self.flags.i else _WORD_BOUNDARY)
        elif c == "B":
            raise self.fail(
                "`\\B` is not supported: RE2 also finds it inside multi-byte characters",
                start,
                self.pos,
                "match the characters around it instead, e.g. `[A-Za-z]{2}`",
            )
        elif c in "Az":
            self.zero_width("\\" + c)
        elif c in "pP":
            self.atom(self.unicode_class(start, c == "P"))
        elif c == "Q":
            end = self.pattern.find("\\E", self.pos)
            text = self.pattern[self.pos :] if end < 0 else self.pattern[self.pos : end]
            self.pos = len(self.pattern) if end < 0 else end + 2
            for x in text:  # as RE2 reads it: `\Qab\E*` repeats the `b`
                self.letter(ord(x))
        elif c != "E":  # a stray `\E` ends nothing, as in RE2
            self.letter(self.code_point(start, c))

    def code_point(self, start: int, c: str) -> int:
        """The character an escape inside or outside a class stands for (pos is past `\\c`)."""
        if c in _CONTROL:
            return _CONTROL[c]
        if c == "x":
            if self.peek() == "{":
                close = self.pattern.find("}", self.pos)
                digits = self.pattern[self.pos + 1 : close] if close > 0 else ""
                if not digits or not _is_hex(digits) or int(digits, 16) > 0x10FFFF:
                    raise self.fail(
                        "invalid `\\x{…}` escape",
                        start,
                        close + 1 if close > 0 else self.pos,
                        "write a hex code point up to 10ffff, e.g. `\\x{e9}`",
                    )
                self.pos = close + 1
                return int(digits, 16)
            digits = self.pattern[self.pos : self.pos + 2]
            if len(digits) < 2 or not _is_hex(digits):
                raise self.fail(
                    "invalid `\\x` escape",
                    start,
                    self.pos + len(digits),
                    "write two hex digits (`\\xe9`) or `\\x{e9}`",
                )
            self.pos += 2
            return int(digits, 16)
        if c == "0" or (c in "1234567" and self.peek() in tuple("01234567")):
            digits = c
            while len(digits) < 3 and self.peek() and self.peek() in "01234567":
                digits += self.peek()
                self.pos += 1
            return int(digits, 8)
        if c in "123456789":
            raise self.fail(
                f"backreference `\\{c}` is not RE2 syntax",
                start,
                self.pos,
                "RE2 has no backreferences: rewrite the pattern, or use a Python labeling function",
            )
        if c.isascii() and not c.isalnum():
            return ord(c)
        hint = _HINTS.get(c)
        raise self.fail(
            f"invalid escape sequence `\\{c}`",
            start,
            self.pos,
            hint or "escape only punctuation; RE2's escapes are listed in the reference",
        )

    def unicode_class(
        self,
        start: int,
        negated: bool,
        flat: bool = False,
        members: list[tuple[int, int]] | None = None,
    ) -> str:
        """`\\pL`, `\\p{Greek}`, `\\P{…}`, `\\p{^…}`: Java's spelling (`flat`: as an item
        inside a class, whose `members` learn which case-sensitive letters it holds)."""
        if self.peek() == "{":
            close = self.pattern.find("}", self.pos)
            if close < 0:
                raise self.fail("missing `}` in `\\p{…}`", start, self.pos + 1)
            name = self.pattern[self.pos + 1 : close]
            self.pos = close + 1
        else:
            name = self.peek()
            self.pos += 1
        if name.startswith("^"):
            negated, name = not negated, name[1:]
        if self.rust:  # Unicode tables differ by version (RE2's are older than Rust's)
            raise _NoRust
        if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
            raise self.fail(
                "invalid Unicode class",
                start,
                self.pos,
                "write a category or script such as `\\pL`, `\\p{Greek}`",
            )
        if members is not None:
            members.extend((c, c) for c in _CASE_WATCHED if _has_property(c, name) != negated)
        if name == "Any":
            return (
                _flat(((0, MAX_CODE),), negated) if flat else _class_of(((0, MAX_CODE),), negated)
            )
        java = name if name in _CATEGORIES else f"Is{name}"
        return f"\\{'P' if negated else 'p'}{{{java}}}"

    def char_class(self) -> str:
        start = self.pos
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        items: list[str] = []
        members: list[tuple[int, int]] = []  # what is known of the class's members
        first = True
        while True:
            ch = self.peek()
            if not ch:
                raise self.fail(
                    "missing `]` in a character class",
                    start,
                    len(self.pattern),
                    "close the class, or escape `[` as `\\[`",
                )
            if ch == "]" and not first:
                self.pos += 1
                break
            first = False
            if ch == "[" and self.peek(1) == ":":
                close = self.pattern.find(":]", self.pos + 2)
                name = self.pattern[self.pos + 2 : close] if close > 0 else ""
                negate = name.startswith("^")
                if close > 0 and name.lstrip("^") in _POSIX:
                    ranges = _POSIX[name.lstrip("^")]
                    ranges = self.closed(ranges) if negate else ranges
                    members.extend(_complement(ranges) if negate else ranges)
                    items.append(_flat(ranges, negate))
                    self.pos = close + 2
                    continue
                if close > 0 and name and name.lstrip("^").isalpha():
                    raise self.fail(
                        f"invalid character class `[:{name}:]`",
                        self.pos,
                        close + 2,
                        "POSIX classes: " + ", ".join(sorted(_POSIX)),
                    )
            low = self.class_atom(items, members)
            if low is None:
                continue
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                dash = self.pos
                self.pos += 1
                high = self.class_atom(items, members, in_range=True)
                if high is None or high < low:
                    raise self.fail(
                        "invalid character class range",
                        dash - 1,
                        self.pos,
                        "a range goes from the lower character to the higher",
                    )
                self.ascii_under_i(low, high)
                items.append(_class_char(low) + "-" + _class_char(high))
                members.append((low, high))
            else:
                self.ascii_under_i(low, low)
                items.append(_class_char(low))
                members.append((low, low))
        if self.rust:
            return self.rust_class(tuple(members), negated)
        if self.flags.i:  # RE2 folds s and k into ſ and K; Java's ranges do not
            for code, partner in _FOLD_PARTNERS.items():
                held = any(lo <= code <= hi for lo, hi in members)
                if held and not any(lo <= partner <= hi for lo, hi in members):
                    items.append(_literal(partner))
                    members.append((partner, partner))
        java = f"[{'^' if negated else ''}{''.join(items)}]"
        return self.folded(java, tuple(members), negated)

    def class_atom(
        self, items: list[str], members: list[tuple[int, int]], in_range: bool = False
    ) -> int | None:
        """One character of a class as a code point, or None after adding a whole class
        (`\\d`, `\\pL`) to `items`."""
        start, ch = self.pos, self.peek()
        if ch != "\\":
            self.pos += 1
            return ord(ch)
        c = self.peek(1)
        if not c:
            raise self.fail("trailing `\\`", start, start + 1)
        if c in "dwsDWSpP":
            if in_range:
                raise self.fail("a class cannot end a range", start, start + 2)
            self.pos += 2
            if c in "pP":
                items.append(self.unicode_class(start, c == "P", flat=True, members=members))
            else:
                ranges = _PERL[c.lower()]
                ranges = self.closed(ranges) if c.isupper() else ranges
                members.extend(_complement(ranges) if c.isupper() else ranges)
                items.append(_flat(ranges, c.isupper()))
            return None
        self.pos += 2
        if c in "bBAzQE":
            raise self.fail(f"`\\{c}` cannot appear in a character class", start, self.pos)
        return self.code_point(start, c)


_CASE_WATCHED = (0x49, 0x69, 0x130, 0x131, 0x53, 0x73, 0x17F, 0x4B, 0x6B, 0x212A)


def _has_property(code: int, name: str) -> bool:
    """Whether one of the watched letters (all Latin script) has Unicode property `name`."""
    import unicodedata

    if name in ("Any", "Latin"):
        return True
    category = unicodedata.category(chr(code))
    return category == name or (len(name) == 1 and category.startswith(name))


_ASCII_UPPER, _ASCII_LOWER = (0x41, 0x5A), (0x61, 0x7A)
_ORBITS = ((0x53, 0x73, 0x17F), (0x4B, 0x6B, 0x212A))  # S s ſ, K k and the Kelvin sign
_ASCII_PARTNERS = (0x17F, 0x212A)


# General categories without case: currency and maths symbols, punctuation, spaces and
# decimal digits (not letters, marks, numbers such as Ⅻ or other symbols such as Ⓐ, which
# can have case partners). tests/test_lf_polars.py checks that both engines fold each of
# them to itself alone.
_CASELESS = frozenset(("Sc", "Sm", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Zs", "Nd"))


def _caseless(code: int) -> bool:
    import unicodedata

    return unicodedata.category(chr(code)) in _CASELESS


def _fold_ascii(ranges: Ranges) -> Ranges:
    """`ranges` with what RE2's case folding adds to the ASCII letters among them (the
    other case, ſ for s, the Kelvin sign for k) and to ſ and the Kelvin sign."""
    extra: list[tuple[int, int]] = []
    for lo, hi in ranges:
        for (a, b), shift in ((_ASCII_UPPER, 0x20), (_ASCII_LOWER, -0x20)):
            low, high = max(lo, a), min(hi, b)
            if low <= high:
                extra.append((low + shift, high + shift))
    for orbit in _ORBITS:
        if any(lo <= c <= hi for lo, hi in ranges for c in orbit):
            extra.extend((c, c) for c in orbit)
    return (*ranges, *extra)


def _merged(ranges: Ranges) -> Ranges:
    """Sorted, overlapping and adjacent ranges joined: U+D7FF and U+E000 count as adjacent
    (no text holds the surrogates between them), since Rust's regex parser mis-negates a
    class with ranges on both sides of that gap (`[^\\x{0}-\\x{d7ff}\\x{e000}-\\x{10ffff}]`
    matches U+D7FF and U+E000 in polars 2.1)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and (lo <= out[-1][1] + 1 or (out[-1][1] == 0xD7FF and lo == 0xE000)):
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _java_case(before: bool, after: bool, rust: bool = False) -> str:
    """Java's flags for a change of RE2's `i`: Unicode case folding as RE2 folds. (Rust's
    `i` folds as RE2's does; its `u` is always on, for Unicode text.)"""
    if before == after:
        return ""
    flag = "i" if rust else "iu"
    return flag if after else f"-{flag}"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _literal(code: int) -> str:
    """A literal character outside a class: escaped when it is ASCII punctuation, a code
    point when it is not printable ASCII."""
    if 0x20 < code < 0x7F:
        ch = chr(code)
        return ch if ch.isalnum() or ch == "_" else "\\" + ch
    return f"\\x{{{code:x}}}"


_W = f"[{_items(_WORD)}]"
_WORD_BOUNDARY = f"(?:(?<={_W})(?!{_W})|(?<!{_W})(?={_W}))"
_ANY = f"[{_items(((0, MAX_CODE),))}]"


def _class_char(code: int) -> str:
    return _literal(code)


def _flat(ranges: Ranges, negated: bool) -> str:
    """A class's members as items inside another class (Java's nested classes and their
    negation are avoided: a negated class is written as its complement)."""
    return _items(_complement(ranges) if negated else ranges)


def _class_of(ranges: Ranges, negated: bool) -> str:
    return f"[{'^' if negated else ''}{_items(ranges)}]"


@dataclass(frozen=True)
class Parsed:
    java: str  # the java.util.regex pattern matching what RE2 matches
    shortest: int  # the fewest characters a match takes (0: it can match the empty string)


def parse(pattern: str) -> Parsed:
    """Walk `pattern` as RE2 reads it; RegexError when it is outside the dialect."""
    scanner = _Scanner(pattern)
    java = scanner.run()
    return Parsed(java, scanner.shortest())


def to_java(pattern: str) -> str:
    """The java.util.regex pattern matching what RE2 matches with `pattern`."""
    return parse(pattern).java


def to_rust(pattern: str) -> str | None:
    """The Rust `regex` pattern (polars' engine) matching what RE2 matches with `pattern`,
    or None where no exact translation is known (`\\p{…}`, a non-ASCII letter under `i`).
    `pattern` is one the checker accepted."""
    scanner = _Scanner(pattern, rust=True)
    try:
        return scanner.run()
    except _NoRust:
        return None


def re2_problem(pattern: str) -> str | None:
    """RE2's own verdict, when the `google-re2` package is installed: its error message, or
    None when RE2 accepts the pattern (or cannot be asked)."""
    try:
        import re2  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    return None

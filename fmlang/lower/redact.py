"""PII redaction as SQL: one RE2 pattern per kind, and a Luhn check for card numbers.

Each kind is replaced by a placeholder (`[EMAIL]`, …). Kinds are applied in a fixed order so
that one kind's match cannot be half-eaten by another's: links first (they may contain
digits and `@`), then e-mail addresses, IP addresses, card numbers (digit runs that pass the
Luhn checksum only) and last phone numbers. `pii` means all of them.
"""

from __future__ import annotations

from fmlang.lower.sql import SqlCompiler

# Order matters: see the module docstring.
PATTERNS: dict[str, str] = {
    # A link ends before trailing punctuation: "see www.x.com/a." keeps its full stop.
    "url": r"(?i)\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]",
    "email": r"(?i)\b[a-z0-9._%+-]+@(?:[a-z0-9-]+\.)+[a-z]{2,}\b",
    "ip": (
        r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
        r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b"
        r"|\b(?i:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4})\b"
    ),
    # 13 to 19 digits, optionally grouped by single spaces or dashes: candidates only; the
    # Luhn checksum decides.
    "card": r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
    # An international number (+ and country code, then 6–14 more digits in groups), or a
    # North American one with its area code: (555) 123-4567, 555.123.4567, 555-123-4567.
    "phone": (
        r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}[0-9]"
        r"|(?:\([0-9]{3}\)\s?|\b[0-9]{3}[.-])[0-9]{3}[.-][0-9]{4}\b"
    ),
}
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in PATTERNS}
ORDER = tuple(PATTERNS)


def kinds_in_order(kinds: tuple[str, ...]) -> tuple[str, ...]:
    wanted = set(ORDER) if "pii" in kinds else set(kinds)
    return tuple(kind for kind in ORDER if kind in wanted)


def redact_sql(compiler: SqlCompiler, column_sql: str, kinds: tuple[str, ...]) -> str:
    """`column_sql` with every requested kind replaced by its placeholder."""
    out = column_sql
    for kind in kinds_in_order(kinds):
        if kind == "card":
            out = _redact_cards(compiler, out)
        else:
            out = compiler.regex_replace(out, PATTERNS[kind], PLACEHOLDERS[kind])
    return out


def _redact_cards(compiler: SqlCompiler, text: str) -> str:
    """Replace each candidate digit run that passes the Luhn checksum, in a fold over the
    candidates (`list_reduce` in DuckDB, `aggregate` in Spark)."""
    d = compiler.d
    pattern = d.string(PATTERNS["card"])
    digits = compiler.regex_replace("c", "[^0-9]", "")
    check = luhn_sql(d.name, digits)
    card = d.string(PLACEHOLDERS["card"])
    if d.name == "spark":
        found = f"filter(regexp_extract_all({text}, {pattern}, 0), c -> {check})"
        return f"aggregate({found}, {text}, (acc, c) -> replace(acc, c, {card}))"
    found = f"list_filter(regexp_extract_all({text}, {pattern}), lambda c: {check})"
    return f"list_reduce({found}, lambda acc, c: replace(acc, c, {card}), {text})"


def luhn_sql(dialect: str, digits: str) -> str:
    """SQL for "the digit string `digits` passes the Luhn checksum": from the right, every
    second digit is doubled (minus 9 when above 9), and the sum is a multiple of 10."""
    if dialect == "spark":
        digit = f"CAST(substr(reverse({digits}), i + 1, 1) AS INT)"
        term = f"CASE WHEN i % 2 = 1 THEN ({digit} * 2) - IF({digit} > 4, 9, 0) ELSE {digit} END"
        terms = f"transform(sequence(0, length({digits}) - 1), i -> {term})"
        return f"(aggregate({terms}, 0, (s, t) -> s + t) % 10 = 0)"
    digit = f"CAST(reverse({digits})[i + 1] AS INTEGER)"
    term = f"CASE WHEN i % 2 = 1 THEN ({digit} * 2) - (CASE WHEN {digit} > 4 THEN 9 ELSE 0 END)"
    term += f" ELSE {digit} END"
    return f"(list_sum(list_transform(range(length({digits})), lambda i: {term})) % 10 = 0)"

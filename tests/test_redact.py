"""PII redaction patterns, run in DuckDB exactly as the pipeline runs them: what each kind
must catch, and what it must leave alone."""

from __future__ import annotations

import duckdb
import pytest

from fmlang.lower.redact import luhn_sql, redact_sql
from fmlang.lower.sql import DUCKDB, SqlCompiler


def redacted(text: str, *kinds: str) -> str:
    con = duckdb.connect()
    try:
        sql = redact_sql(SqlCompiler(DUCKDB), "$1", kinds)
        row = con.execute(f"SELECT {sql}", [text]).fetchone()
        assert row is not None
        return str(row[0])
    finally:
        con.close()


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("email", "write to ana.lopez+spam@mail.example.co.uk today", "write to [EMAIL] today"),
        ("email", "ANA@EXAMPLE.COM", "[EMAIL]"),
        ("phone", "call +44 20 7946 0958 now", "call [PHONE] now"),
        ("phone", "call (555) 123-4567 or 555.123.4567", "call [PHONE] or [PHONE]"),
        ("phone", "+1-202-555-0143", "[PHONE]"),
        ("url", "see https://bit.ly/3xYz?a=1 and www.example.com/page.", "see [URL] and [URL]."),
        ("ip", "from 192.168.0.1 and 10.0.0.255", "from [IP] and [IP]"),
        ("ip", "v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "v6 [IP]"),
        ("card", "card 4111 1111 1111 1111 exp", "card [CARD] exp"),
        ("card", "card 5500-0000-0000-0004", "card [CARD]"),
        ("card", "amex 378282246310005", "amex [CARD]"),
    ],
)
def test_true_positives(kind: str, text: str, expected: str) -> None:
    assert redacted(text, kind) == expected


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("email", "meet @ noon, twitter @handle, a@b"),
        ("phone", "posted 2014-11-07, 1,000,000,000 views, year 2015"),
        ("phone", "order #123456789 shipped"),
        ("url", "the end.Next sentence, e.g. examples"),
        ("ip", "version 1.2.3 and 999.1.1.1 and 256.256.256.256"),
        ("card", "card 4111 1111 1111 1112 fails the checksum"),
        ("card", "tracking 1234567890123 is not a card"),
    ],
)
def test_false_positives_are_left_alone(kind: str, text: str) -> None:
    assert redacted(text, kind) == text


def test_pii_means_every_kind_in_a_safe_order() -> None:
    text = (
        "mail ana@x.org, site https://x.org/a@b, card 4111111111111111, ip 8.8.8.8, "
        "tel +1 202 555 0143"
    )
    assert redacted(text, "pii") == ("mail [EMAIL], site [URL], card [CARD], ip [IP], tel [PHONE]")


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("79927398713", True), ("79927398710", False), ("4111111111111111", True),
     ("0", True), ("18", True), ("19", False)],
)  # fmt: skip
def test_luhn_in_sql(digits: str, valid: bool) -> None:
    con = duckdb.connect()
    row = con.execute(f"SELECT {luhn_sql('duckdb', '$1')}", [digits]).fetchone()
    con.close()
    assert row is not None and bool(row[0]) is valid

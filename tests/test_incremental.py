"""`ParseCache` (the language server's reparse of changed items only) gives exactly what
`parse_whole` gives, spans, comments and syntax errors included, edit after edit."""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

import pytest

from fmlang.api import check_text
from fmlang.diagnostics import Span
from fmlang.syntax.incremental import ParseCache, chunks, reusing_parses
from fmlang.syntax.parser import ParseResult, parse_whole

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from check_speed import generate  # noqa: E402

SPECS = sorted([*ROOT.glob("examples/**/*.fm"), *ROOT.glob("stdlib/*.fm")])
INSERTS = ["x", "{", "}", '"', "#", "\n", " ", "1", "/", "model ", "\nlabels l on d {"]


def spans(node: object) -> list[Span]:
    if isinstance(node, Span):
        return [node]
    if isinstance(node, tuple):
        return [s for item in node for s in spans(item)]
    if dataclasses.is_dataclass(node):
        return [s for f in dataclasses.fields(node) for s in spans(getattr(node, f.name))]
    return []


def assert_same(got: ParseResult, want: ParseResult) -> None:
    assert got.diagnostics == want.diagnostics
    assert [d.labels for d in got.diagnostics] == [d.labels for d in want.diagnostics]
    if want.module is None:
        assert got.module is None
        return
    assert got.module is not None
    assert got.module == want.module
    assert spans(got.module) == spans(want.module)
    assert got.module.span == want.module.span
    assert got.module.comments == want.module.comments
    assert spans(got.module.comments) == spans(want.module.comments)


def edited(text: str, rng: random.Random) -> str:
    at = rng.randrange(len(text) + 1)
    kind = rng.randrange(3)
    if kind == 0:
        return text[:at] + rng.choice(INSERTS) + text[at:]
    if kind == 1:
        return text[:at] + text[at + rng.randint(1, 12) :]
    line_start = text.rfind("\n", 0, at) + 1
    line_end = text.find("\n", at) + 1 or len(text)
    return text[:line_start] + text[line_end:] + text[line_start:line_end]  # move a line


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_random_edits_parse_as_the_whole_text_does(path: Path) -> None:
    rng = random.Random(path.name)
    cache = ParseCache()
    text = path.read_text(encoding="utf-8")
    for _ in range(40):
        assert_same(cache.parse(text, path.name), parse_whole(text, path.name))
        candidate = edited(text, rng)
        assert_same(cache.parse(candidate, path.name), parse_whole(candidate, path.name))
        text = candidate if rng.random() < 0.6 else text


def test_edits_to_a_large_spec_reuse_the_untouched_items() -> None:
    text = generate(1500)
    cache = ParseCache()
    cache.parse(text, "big.fm")
    pieces = len(list(chunks(text)))
    changed = text.replace(
        "accuracy >= 0.90 on comments_7.test", "accuracy >= 0.95 on comments_7.test"
    )
    changed = changed.replace("  lf song:", "\n  lf song:", 1)  # moves every later line
    assert_same(cache.parse(changed, "big.fm"), parse_whole(changed, "big.fm"))
    assert pieces > 20


def test_a_keyword_at_the_start_of_a_line_inside_a_block() -> None:
    text = "labels l on d {\n  classes [a, b]\nmodel majority\n  lf x: C > 1 -> a\n}\n"
    assert_same(ParseCache().parse(text, "f.fm"), parse_whole(text, "f.fm"))


def test_the_checker_reads_the_cache_inside_reusing_parses() -> None:
    text = (ROOT / "examples" / "youtube_spam" / "spam.fm").read_text(encoding="utf-8")
    base = ROOT / "examples" / "youtube_spam"
    cache = ParseCache()
    with reusing_parses(cache):
        cached = check_text(text, "spam.fm", base)
    plain = check_text(text, "spam.fm", base)
    assert cached.diagnostics == plain.diagnostics
    assert set(cache._files) >= {"spam.fm", "<std>/models.fm"}

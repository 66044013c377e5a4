"""The Pygments lexer: registered as `fm`, and every spec we ship lexes without errors."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

pygments = pytest.importorskip("pygments")
from pygments.token import Error, Keyword, Name, Number, String  # noqa: E402

from fmlang.syntax.pygments_lexer import FmLexer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted([*ROOT.glob("examples/**/*.fm"), *ROOT.glob("stdlib/*.fm")])


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_lex_without_errors(path: Path) -> None:
    tokens = list(FmLexer().get_tokens(path.read_text(encoding="utf-8")))
    assert [value for kind, value in tokens if kind is Error] == []


def test_tokens_of_a_small_spec() -> None:
    text = "model m {\n  train { lr = 3e-4, batch = auto }\n  x 512MiB\n}\nlet r = /a|b/i\n"
    tokens = [(kind, value) for kind, value in FmLexer().get_tokens(text) if value.strip()]
    assert (Keyword.Declaration, "model") in tokens
    assert (Name.Class, "m") in tokens
    assert (Number, "3e-4") in tokens
    assert (Keyword.Constant, "auto") in tokens
    assert (Keyword.Type, "MiB") in tokens
    assert (String.Regex, "/a|b/i") in tokens


def test_registered_as_a_pygments_lexer() -> None:
    names = [e.name for e in entry_points(group="pygments.lexers") if e.value.startswith("fmlang")]
    if not names:
        pytest.skip("fmlang's entry points are not installed (pip install -e .)")
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("fm"), FmLexer)
    assert isinstance(get_lexer_for_filename("spam.fm"), FmLexer)

"""`fmc data review`: per rule, the rows it removed (with the row a dedupe kept instead) or
changed; `--keep ID` writes an exception into the spec that the next run honours."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fmlang.api import check_paths
from fmlang.cli.main import cli
from tests.data_helpers import GRANT, TESTER, rows, run_spec, write_csv

SPEC = """\
dataset d {
  source csv("d.csv", header = true)
  schema {
    id: string @id
    who: string @pii
    body: text
  }
  clean {
    normalize body: trim, lower
    dedupe body
    drop where length(body) < 4
    keep where not body contains "spam"
  }
GRANT}
""".replace("GRANT", GRANT)

ROWS = [
    ["a", "ann", "  Hello World  "],
    ["b", "bob", "hello world"],  # a duplicate of a once normalized
    ["c", "cy", "ok"],  # too short
    ["d", "dee", "buy spam now"],  # not kept
    ["e", "eve", "a long and useful comment"],
]


def project(tmp_path: Path) -> Path:
    write_csv(tmp_path / "d.csv", ["id", "who", "body"], ROWS)
    spec = tmp_path / "d.fm"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def review(spec: Path, *extra: str) -> tuple[int, str]:
    argv = ["data", "review", str(spec), "d", "--as", TESTER, "--build",
            str(spec.parent / "b"), *extra]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    return result.exit_code, result.output


def test_review_shows_what_each_rule_did(tmp_path: Path) -> None:
    code, output = review(project(tmp_path))
    assert code == 0, output
    lines = output.splitlines()
    assert "line 9: normalize body: trim, lower: 1 rows changed" in lines
    assert "  ~ [a] body: '  Hello World  ' -> 'hello world'" in lines
    assert "line 10: dedupe body: 1 rows removed" in lines
    assert "  - [b] id='b', who='<pii>', body='hello world'" in lines  # @pii masked
    assert "      similarity 1.000 to kept id='a', who='<pii>', body='hello world'" in lines
    assert "line 11: drop where length(body) < 4: 1 rows removed" in lines
    assert "  - [c] id='c', who='<pii>', body='ok'" in lines
    assert "  - [d] id='d', who='<pii>', body='buy spam now'" in lines
    assert "ann" not in output


def test_keeping_a_removed_row_writes_an_exception_the_next_run_honours(tmp_path: Path) -> None:
    spec = project(tmp_path)
    code, output = review(spec, "--keep", "c", "--keep", "d")
    assert code == 0, output
    text = spec.read_text(encoding="utf-8")
    assert '    drop where (length(body) < 4) and not id in ["c"]\n' in text
    assert '    keep where (not body contains "spam") or id in ["d"]\n' in text
    assert check_paths([spec]).ok
    run_spec(spec, tmp_path / "run", until="data")
    assert [r["id"] for r in rows(tmp_path / "run/run/data/d/all.parquet")] == ["a", "c", "d", "e"]


def test_a_dedupe_removal_or_an_unknown_row_cannot_be_kept(tmp_path: Path) -> None:
    spec = project(tmp_path)
    before = spec.read_text(encoding="utf-8")
    code, output = review(spec, "--keep", "b")
    assert code == 2 and "FM0773" in output
    code, output = review(spec, "--keep", "zzz")
    assert code == 2 and "FM0772" in output
    assert spec.read_text(encoding="utf-8") == before  # nothing written


def test_a_near_duplicate_is_shown_with_the_rules_own_similarity() -> None:
    from fmlang.backends.data.review import _partner
    from fmlang.ir.nodes import Dedupe

    rule = Dedupe(columns=("body",), near=0.5)
    removed = {"id": "x", "body": "Hello World!", "fm_row": 3}
    kept = [{"id": "a", "body": "something else", "fm_row": 1},
            {"id": "b", "body": "hello world", "fm_row": 2}]  # fmt: skip
    partner, similarity = _partner(removed, kept, rule)
    # 5-grams of "hello world!" (8) and "hello world" (7): 7 shared of 8 in all.
    assert partner == {"id": "b", "body": "hello world"} and similarity == 0.875


NEAR_ROWS = [
    ["a", "ann", "the quick brown fox jumps over the lazy dog"],
    ["b", "bob", "the quick brown fox jumps over the lazy dog!!"],  # near a
    ["c", "cy", "the quick brown fox jumps over the lazy dog"],  # the same text as a
    ["d", "dee", "the quick brown fox jumps over the lazy cat"],  # near a, less than b
    ["e", "eve", "something else entirely"],
]


def near_project(tmp_path: Path) -> Path:
    write_csv(tmp_path / "d.csv", ["id", "who", "body"], NEAR_ROWS)
    spec = tmp_path / "d.fm"
    spec.write_text(SPEC.replace("    dedupe body\n", "    dedupe body near 50%\n"), "utf-8")
    return spec


def test_keeping_a_near_duplicate_raises_the_threshold_above_its_similarity(
    tmp_path: Path,
) -> None:
    """A near-dedupe has no per-row exceptions: keeping `b` raises `near` to the smallest
    three-decimal value above b's similarity to its nearest earlier row, so the next run
    keeps b (and d, which is less similar still); `c`, the same text as `a`, stays out."""
    from fmlang.backends.data.review import _grams, _jaccard

    spec = near_project(tmp_path)
    run_spec(spec, tmp_path / "run", until="data")
    assert [r["id"] for r in rows(tmp_path / "run/run/data/d/all.parquet")] == ["a", "e"]
    code, output = review(spec, "--keep", "b")
    assert code == 0, output
    text = spec.read_text(encoding="utf-8")
    similarity = _jaccard(*(_grams({"body": body}, ("body",)) for body in
                            (NEAR_ROWS[0][2], NEAR_ROWS[1][2])))  # fmt: skip
    threshold = (int(similarity * 1000) + 1) / 1000
    assert similarity < threshold <= similarity + 0.001
    assert f"    dedupe body near {threshold:.3f}\n" in text, text
    assert "raised `near` of line 10 from 0.5 to" in output
    assert check_paths([spec]).ok
    run_spec(spec, tmp_path / "run", until="data")
    assert [r["id"] for r in rows(tmp_path / "run/run/data/d/all.parquet")] == ["a", "b", "d", "e"]
    code, output = review(spec, "--keep", "c")
    assert code == 2 and "FM0773" in output and "the same as an earlier row" in output

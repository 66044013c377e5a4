"""`fmc` as a user runs it: a real subprocess, its exit codes, streams and formats.

Exit codes: 0 ok, 1 errors in the input, 2 usage or I/O problems, 101 internal error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fmlang.diagnostics.codes import CODES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "youtube_spam" / "spam.fm"
NEGATIVE = ROOT / "tests" / "negative"
TRACEBACK = "Traceback (most recent call last)"
SHORT_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): error\[FM\d{4}\]: \S")

BAD_SPEC = """\
dataset comments {
  source csv("data/comments.csv")
  schema { CONTENT: txt }
}
"""


def fmc(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FMC_DEBUG"}
    env.update(PYTHONPATH=str(ROOT), NO_COLOR="1", COLUMNS="120", PYTHONIOENCODING="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fmlang", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=cwd or ROOT,
        env=env,
        timeout=120,
    )
    assert TRACEBACK not in done.stdout + done.stderr
    return done


@pytest.fixture
def bad_spec(tmp_path: Path) -> Path:
    path = tmp_path / "bad.fm"
    path.write_text(BAD_SPEC, encoding="utf-8")
    return path


# ---- exit codes ---------------------------------------------------------------


def test_valid_spec_exits_0() -> None:
    done = fmc("check", EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "no problems" in done.stderr


def test_errors_in_the_spec_exit_1(bad_spec: Path) -> None:
    done = fmc("check", bad_spec)
    assert done.returncode == 1
    assert "error[FM0310]" in done.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    done = fmc("check", tmp_path / "nowhere.fm")
    assert done.returncode == 2
    assert "error[FM0001]" in done.stderr and "no such file" in done.stderr


def test_directory_exits_2(tmp_path: Path) -> None:
    done = fmc("check", tmp_path)
    assert done.returncode == 2
    assert "error[FM0001]" in done.stderr and "directory" in done.stderr


def test_input_errors_outrank_io_errors(bad_spec: Path, tmp_path: Path) -> None:
    done = fmc("check", bad_spec, tmp_path / "nowhere.fm")
    assert done.returncode == 1
    assert "FM0001" in done.stderr and "FM0310" in done.stderr


def test_several_files_are_checked_together(bad_spec: Path) -> None:
    done = fmc("check", "--format", "short", EXAMPLE, bad_spec)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.endswith("bad.fm:3:21: error[FM0310]: unknown column type `txt`")


def test_file_too_large_is_reported_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.fm"
    with huge.open("wb") as handle:
        handle.truncate(17 * 1024 * 1024)  # sparse: nothing is written or read
    done = fmc("check", huge)
    assert done.returncode == 1
    assert "error[FM0003]" in done.stderr


def test_binary_file_is_an_encoding_error(tmp_path: Path) -> None:
    path = tmp_path / "model.fm"
    path.write_bytes(b"dataset d {\x00\x01\x02}")
    done = fmc("check", "--format", "short", path)
    assert done.returncode == 1
    assert "error[FM0002]" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("check", "--bogus", "x.fm"),
        ("check",),
        ("check", "--format", "xml", "x.fm"),
        ("frobnicate",),
        ("build",),
        ("explain",),
        (),
    ],
    ids=lambda a: " ".join(a) or "no arguments",
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    done = fmc(*args)
    assert done.returncode == 2
    assert "Usage:" in done.stderr or "Usage:" in done.stdout


# ---- explain ------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["FM0301", "fm0301", "301", "0301"])
def test_explain_known_code(spelling: str) -> None:
    done = fmc("explain", spelling)
    assert done.returncode == 0
    assert done.stdout.startswith("FM0301: unknown setting")
    assert CODES["FM0301"].explanation.split(".")[0] in done.stdout


@pytest.mark.parametrize("code", ["FM9999", "nonsense", "FM03011"])
def test_explain_unknown_code_exits_2(code: str) -> None:
    done = fmc("explain", code)
    assert done.returncode == 2
    assert "unknown diagnostic code" in done.stderr
    assert done.stdout == ""


# ---- formats ------------------------------------------------------------------


def test_json_prints_only_json_on_stdout() -> None:
    done = fmc("check", "--format", "json", NEGATIVE / "multiple_errors.fm")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    diagnostics = document["diagnostics"]
    assert len(diagnostics) >= 5
    for d in diagnostics:
        assert re.fullmatch(r"FM\d{4}", d["code"]) and d["code"] in CODES
        assert d["severity"] == "error" and d["message"]
        primary = [label for label in d["labels"] if label["primary"]]
        assert len(primary) == 1
        span = primary[0]["span"]
        assert span["line"] >= 1 and span["column"] >= 1
        assert span["file"].endswith("multiple_errors.fm")


def test_json_for_a_valid_spec_is_an_empty_list() -> None:
    done = fmc("check", "--format", "json", EXAMPLE)
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"diagnostics": []}


def test_json_for_a_missing_file(tmp_path: Path) -> None:
    done = fmc("check", "--format", "json", tmp_path / "nowhere.fm")
    assert done.returncode == 2
    (diagnostic,) = json.loads(done.stdout)["diagnostics"]
    assert diagnostic["code"] == "FM0001"


def test_short_format_is_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.fm").write_text(BAD_SPEC, encoding="utf-8")
    done = fmc("check", "--format", "short", "bad.fm", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines == ["bad.fm:3:21: error[FM0310]: unknown column type `txt`"]
    assert SHORT_LINE.match(lines[0])


def test_short_format_for_every_line(tmp_path: Path) -> None:
    done = fmc("check", "--format", "short", NEGATIVE / "multiple_errors.fm")
    lines = done.stderr.splitlines()
    assert len(lines) >= 5
    assert all(SHORT_LINE.match(line) for line in lines), lines


def test_rich_output_has_a_caret_excerpt(tmp_path: Path) -> None:
    (tmp_path / "bad.fm").write_text(BAD_SPEC, encoding="utf-8")
    done = fmc("check", "bad.fm", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "error[FM0310]: unknown column type `txt`"
    assert " --> bad.fm:3:21" in done.stderr
    assert "3 |   schema { CONTENT: txt }" in done.stderr
    caret = next(line for line in lines if "^" in line)
    assert caret.index("^") == lines[lines.index(caret) - 1].index("txt")
    assert "= help: did you mean `text`?" in done.stderr
    assert "1 error" in done.stderr


def test_rich_output_labels_the_unclosed_brace() -> None:
    done = fmc("check", NEGATIVE / "syntax_unclosed_brace.fm")
    assert done.returncode == 1
    assert "this `{` is never closed" in done.stderr
    assert "the file ends here" in done.stderr


# ---- help, version ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("-h",),
        ("check", "--help"),
        ("build", "--help"),
        ("fmt", "--help"),
        ("explain", "--help"),
        ("check", "-h"),
    ],
    ids=" ".join,
)
def test_help_exits_0(args: tuple[str, ...]) -> None:
    done = fmc(*args)
    assert done.returncode == 0
    assert "Usage:" in done.stdout


def test_version_exits_0() -> None:
    done = fmc("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("fmc, version ")


# ---- build --------------------------------------------------------------------


def test_build_writes_the_lock_file(tmp_path: Path) -> None:
    pytest.importorskip("fmlang.ir.build")
    out = tmp_path / "out"
    done = fmc("build", EXAMPLE, "-o", out)
    assert done.returncode == 0, done.stderr
    lock = json.loads((out / "fm.lock.json").read_text(encoding="utf-8"))
    assert lock["schema_version"]
    assert "wrote" in done.stderr


def test_build_stops_at_errors(bad_spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = fmc("build", bad_spec, "-o", out)
    assert done.returncode == 1
    assert "error[FM0310]" in done.stderr
    assert not (out / "fm.lock.json").exists()


def test_build_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    done = fmc("build", tmp_path / "nowhere.fm", "-o", tmp_path / "out")
    assert done.returncode == 2
    assert not (tmp_path / "out").exists()


def test_build_into_an_unwritable_place_exits_2(tmp_path: Path) -> None:
    pytest.importorskip("fmlang.ir.build")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    done = fmc("build", EXAMPLE, "-o", blocker / "out")
    assert done.returncode == 2
    assert "error[FM0001]" in done.stderr


# ---- internal errors ----------------------------------------------------------


def test_internal_error_exits_101_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fmlang.api
    from fmlang.cli import main as cli_main

    def explode(paths: list[Path], verify: bool = False, **options: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fmlang.api, "check_paths", explode)
    monkeypatch.delenv("FMC_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["fmc", "check", str(EXAMPLE)])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code == 101
    err = capsys.readouterr().err
    assert "error[FM0901]: internal compiler error: RuntimeError: boom" in err
    assert TRACEBACK not in err

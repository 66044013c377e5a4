"""Whatever it is fed, `fmc check` answers with diagnostics, never with a crash.

Every run must exit 0, 1 or 2 (never 101, the internal-error exit), print no Python
traceback, and print at least one diagnostic when it fails. Most cases run the CLI
in-process for speed; a handful run it as a real subprocess.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fmlang.check.units import all_units
from fmlang.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"
SPECS = sorted(ROOT.glob("examples/*/*.fm")) + sorted(ROOT.glob("stdlib/*.fm"))
FORMATS = st.sampled_from(["rich", "short", "json"])
# FMC_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py searches longer than the default budget.
FUZZ = settings(
    max_examples=int(os.environ.get("FMC_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- running the CLI ------------------------------------------------------------


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """`fmc ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["fmc", *map(str, args)]
    with mock.patch.object(sys, "argv", argv), redirect_stdout(out), redirect_stderr(err):
        try:
            cli_main.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return code, out.getvalue(), err.getvalue()


def assert_handled(code: int, out: str, err: str, fmt: str = "rich") -> None:
    assert code in (0, 1, 2), f"exit {code}\n{err[-3000:]}"
    assert TRACEBACK not in out + err
    if fmt == "json":
        errors = [d for d in json.loads(out)["diagnostics"] if d["severity"] == "error"]
        assert bool(errors) == (code != 0), out[-3000:]
    elif code:
        assert "error[FM" in err, err[-3000:]


def check_bytes(workdir: Path, data: bytes, fmt: str = "short", name: str = "fuzz.fm") -> None:
    path = workdir / name
    path.write_bytes(data)
    code, out, err = run_cli("check", "--format", fmt, path)
    assert_handled(code, out, err, fmt)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch folder with a copy of the examples, so relative imports still resolve."""
    folder = tmp_path_factory.mktemp("fuzz")
    for spec in SPECS:
        target = folder / spec.parent.name
        if not target.exists():
            shutil.copytree(spec.parent, target, ignore=shutil.ignore_patterns("data"))
    saved = os.environ.pop("FMC_DEBUG", None)
    yield folder
    if saved is not None:
        os.environ["FMC_DEBUG"] = saved


# ---- random input ---------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=2000), fmt=FORMATS)
@example(data=b"\xff\xfe\x00d\x00a", fmt="short")
@example(data=b"dataset d {\x00}", fmt="json")
@example(data=b"\xef\xbb\xbfdataset d { }", fmt="rich")
def test_random_bytes(workdir: Path, data: bytes, fmt: str) -> None:
    check_bytes(workdir, data, fmt)


@FUZZ
@given(text=st.text(max_size=2000), fmt=FORMATS)
@example(text="\u2028dataset d {}", fmt="rich")
@example(text="\ud800", fmt="short")
@example(text='dataset d { description "\t\x0b\x0c" }', fmt="rich")
def test_random_unicode(workdir: Path, text: str, fmt: str) -> None:
    check_bytes(workdir, text.encode("utf-8", errors="surrogatepass"), fmt)


def _grammar_literals() -> list[str]:
    grammar = (ROOT / "grammar" / "fm.lark").read_text(encoding="utf-8")
    rules = "\n".join(line.split("//")[0] for line in grammar.splitlines())
    return sorted(set(re.findall(r'"([^"\s\\]+)"', rules)))


KNOWN_NAMES = (
    "comments", "spam", "minilm_l6", "cpu_2core", "h100", "CONTENT", "std", "models", "hardware",
    "labeling", "lora", "classify", "generate", "train", "test", "rank", "targets", "query",
    "q_proj", "accuracy", "latency", "p95", "memory", "no_pii", "license", "commercial", "max_gap",
    "length", "words", "hash", "python", "local", "kserve", "replicas", "source", "csv", "schema",
    "label", "ham", "text",
)  # fmt: skip
NAMES = st.one_of(
    st.sampled_from(KNOWN_NAMES), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
)
NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["0", "1_000", "3e-4", ".5", "1e999", "9" * 400]),
)
QUANTITIES = st.builds(
    lambda n, u: n + u,
    st.sampled_from(["0", "1", "30", "2.5", "1e3"]),
    st.sampled_from(all_units()),
)
STRINGS = st.builds(lambda s: '"' + s.replace('"', '\\"') + '"', st.text(max_size=12))
REGEXES = st.builds(
    lambda s, f: "/" + s.replace("/", "\\/") + "/" + f,
    st.text(alphabet="ab()[]{}?*+|\\.^$=!<1dws", min_size=1, max_size=10),
    st.sampled_from(["", "i", "g", "ix"]),
)
TOKENS = st.one_of(
    st.sampled_from(_grammar_literals()), NAMES, NUMBERS, QUANTITIES, STRINGS, REGEXES,
    st.sampled_from(["# note", "->", "..", "@", "{", "}", "(", ")", "[", "]", ",", ";"]),
)  # fmt: skip
SEPARATORS = st.sampled_from([" ", " ", "\n", "", "\t", "  "])


@FUZZ
@given(tokens=st.lists(st.tuples(TOKENS, SEPARATORS), max_size=80), fmt=FORMATS)
def test_token_soup(workdir: Path, tokens: list[tuple[str, str]], fmt: str) -> None:
    text = "".join(token + sep for token, sep in tokens)
    check_bytes(workdir, text.encode("utf-8", errors="surrogatepass"), fmt)


@FUZZ
@given(prefix=st.lists(st.sampled_from(["import", "dataset", "model", "labels"]), max_size=1),
       tokens=st.lists(TOKENS, max_size=40))  # fmt: skip
def test_token_soup_inside_a_block(workdir: Path, prefix: list[str], tokens: list[str]) -> None:
    head = f"{prefix[0]} x {{\n" if prefix and prefix[0] != "import" else ""
    text = head + " ".join(tokens) + ("\n}" if head else "")
    check_bytes(workdir, text.encode("utf-8", errors="surrogatepass"), "rich")


def test_grammar_literals_are_found() -> None:
    assert {"dataset", "lf", "->", "..", "{", "contains"} <= set(_grammar_literals())


# ---- damaged examples -----------------------------------------------------------

SPEC_TEXTS = {spec: spec.read_text(encoding="utf-8") for spec in SPECS}
MUTATIONS = st.sampled_from(
    [*"{}()[]\"/#:=,;.@~<>-+*!$'`\n \\0aZ_%", "->", "..", "auto", "not", "\x00", "é", "\t"]
)


def _copy_of(workdir: Path, spec: Path) -> Path:
    """Where the damaged text goes: beside the copied example, so its imports resolve."""
    return workdir / spec.parent.name / f"mutant_{spec.name}"


@FUZZ
@given(spec=st.sampled_from(SPECS), cut=st.floats(0, 1), fmt=FORMATS)
def test_truncated_examples(workdir: Path, spec: Path, cut: float, fmt: str) -> None:
    text = SPEC_TEXTS[spec]
    path = _copy_of(workdir, spec)
    path.write_text(text[: int(len(text) * cut)], encoding="utf-8")
    code, out, err = run_cli("check", "--format", fmt, path)
    assert_handled(code, out, err, fmt)


@FUZZ
@given(
    spec=st.sampled_from(SPECS),
    where=st.floats(0, 1),
    action=st.sampled_from(["replace", "insert", "delete", "swap"]),
    char=MUTATIONS,
    fmt=FORMATS,
)
def test_mutated_examples(
    workdir: Path, spec: Path, where: float, action: str, char: str, fmt: str
) -> None:
    text = SPEC_TEXTS[spec]
    i = min(int(len(text) * where), len(text) - 1)
    mutated = {
        "replace": text[:i] + char + text[i + 1 :],
        "insert": text[:i] + char + text[i:],
        "delete": text[:i] + text[i + 1 :],
        "swap": text[:i] + text[i + 1 : i + 2] + text[i : i + 1] + text[i + 2 :],
    }[action]
    path = _copy_of(workdir, spec)
    path.write_text(mutated, encoding="utf-8")
    code, out, err = run_cli("check", "--format", fmt, path)
    assert_handled(code, out, err, fmt)


def _operators(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.sampled_from(
        ["+", "-", "*", "/", "<", "<=", "==", "!=", ">=", ">", "~", "!~", "and", "or", "in",
         "contains", "allows", ".."]
    )  # fmt: skip
    keyword = st.builds(lambda k, v: f"{k} = {v}", NAMES, inner)
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, binary, inner),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda op, a: op + a, st.sampled_from(["-", "not "]), inner),
        st.builds(
            lambda f, xs: f"{f}({', '.join(xs)})", NAMES, st.lists(inner | keyword, max_size=3)
        ),
        st.builds(lambda xs: f"[{', '.join(xs)}]", st.lists(inner, max_size=3)),
        st.builds(lambda a, n: f"{a}.{n}", inner, NAMES),
        st.builds(lambda a: f"auto in {a}", inner),
    )


LEAVES = st.one_of(
    NAMES, NUMBERS, QUANTITIES, STRINGS, REGEXES, st.sampled_from(["true", "false", "auto"])
)
EXPRESSIONS = st.recursive(LEAVES, _operators, max_leaves=8)


SETTING_LINE = re.compile(r"^(\s*(?:[A-Za-z_]\w*\s*(?:=|:)?\s*|lf\s+\w+:\s*))(\S.*)$")


@FUZZ
@given(spec=st.sampled_from(SPECS), where=st.floats(0, 1), value=EXPRESSIONS)
def test_examples_with_random_values(workdir: Path, spec: Path, where: float, value: str) -> None:
    """Swap one statement's value for a random expression, so that checks meet odd values."""
    lines = SPEC_TEXTS[spec].splitlines()
    candidates = [i for i, line in enumerate(lines) if SETTING_LINE.match(line)]
    i = candidates[min(int(len(candidates) * where), len(candidates) - 1)]
    lines[i] = SETTING_LINE.sub(lambda m: m.group(1) + value, lines[i])
    path = _copy_of(workdir, spec)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    code, out, err = run_cli("check", "--format", "short", path)
    assert_handled(code, out, err, "short")


@FUZZ
@given(
    into=st.sampled_from(SPECS),
    where=st.floats(0, 1),
    lines=st.lists(st.tuples(st.sampled_from(SPECS), st.floats(0, 1)), min_size=1, max_size=4),
)
def test_examples_with_transplanted_lines(
    workdir: Path, into: Path, where: float, lines: list[tuple[Path, float]]
) -> None:
    """Lines of one spec pasted into another: grammatical pieces in the wrong places."""
    target = SPEC_TEXTS[into].splitlines()
    pieces = []
    for spec, at in lines:
        donor = SPEC_TEXTS[spec].splitlines()
        pieces.append(donor[min(int(len(donor) * at), len(donor) - 1)])
    i = int(len(target) * where)
    path = _copy_of(workdir, into)
    path.write_text("\n".join(target[:i] + pieces + target[i:]), encoding="utf-8")
    code, out, err = run_cli("check", "--format", "short", path)
    assert_handled(code, out, err, "short")


# ---- arguments ------------------------------------------------------------------

ARGS = st.one_of(
    st.sampled_from(["check", "explain", "--format", "json", "short", "rich", "xml", "-o",
                     "--help", "--version", "-", "", ".", "/dev/null", "FM0301", "--", "-x"]),
    st.text(max_size=8).filter(lambda s: "\x00" not in s),
)  # fmt: skip


@FUZZ
@given(args=st.lists(ARGS, max_size=5))
def test_random_arguments(workdir: Path, args: list[str]) -> None:
    if args[:1] and args[0] not in ("check", "explain"):
        args = ["check", *args]  # never `build` or `fmt`: they write files
    code, out, err = run_cli(*args)
    assert code in (0, 1, 2), err
    assert TRACEBACK not in out + err


# ---- pathological files ---------------------------------------------------------

N = 5000
DEEP = {
    "parentheses": "labels l on d { lf x: " + "(" * N + "a" + ")" * N + " -> b }",
    "lists": "let x = " + "[" * N + "1" + "]" * N,
    "blocks": "model m { " + "train { " * N + "}" * N + " }",
    "unclosed_blocks": "model m { " + "train { " * N,
    "minus": "model m { x = " + "-" * N + "1 }",
    "not": "dataset d { clean { drop where " + "not " * N + "a } }",
    "attributes": "model m { base = " + "a." * N + "b }",
    "calls": "model m { task = f" + "()" * N + " }",
    "nested_calls": "model m { adapter = " + "lora(" * N + ")" * N + " }",
    "autos": "model m { max_seq = " + "auto in " * N + "1 }",
    "plus_chain": "dataset d { schema { a: int }\n clean { drop where a" + " + a" * N + " > 1 } }",
    "or_chain": "labels l on d { lf x: " + " or ".join(["a"] * N) + " -> b }",
    "comparison_chain": "dataset d { x = " + " < ".join(["1"] * N) + " }",
    "list_of_many": "let x = [" + ", ".join(["1"] * N * 4) + "]",
    "many_items": "\n".join(f"let x{i} = {i}" for i in range(N)),
    "many_errors": "\n".join(f"dataset d{i} {{ }}" for i in range(N // 10)),
}
MEGABYTE = 1024 * 1024
HUGE = {
    "string": 'let x = "' + "a" * MEGABYTE + '"',
    "name": "x" * MEGABYTE,
    "comment": "# " + "c" * MEGABYTE,
    "regex": "let x = /" + "a" * MEGABYTE + "/",
    "unclosed_string": 'let x = "' + "a" * MEGABYTE,
    "number": "let x = " + "9" * MEGABYTE,
    "spaces": " " * MEGABYTE + "dataset",
}


@pytest.mark.parametrize("text", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting(workdir: Path, text: str) -> None:
    check_bytes(workdir, text.encode("utf-8"), "rich")


# The slow cases (a megabyte for the lexer to scan) run in one format each.
HUGE_FORMATS = {
    "string": ("json",),
    "name": ("rich", "short", "json"),
    "comment": ("short",),
    "regex": ("json",),
    "unclosed_string": ("rich",),
    "number": ("short",),
    "spaces": ("rich",),
}


@pytest.mark.parametrize("case", HUGE)
def test_megabyte_line(workdir: Path, case: str) -> None:
    path = workdir / "huge.fm"
    path.write_text(HUGE[case], encoding="utf-8")
    for fmt in HUGE_FORMATS[case]:
        code, out, err = run_cli("check", "--format", fmt, path)
        assert_handled(code, out, err, fmt)
        assert len(out) + len(err) < 20_000, "diagnostics must not echo a megabyte back"


SPECIAL = {
    "empty": b"",
    "only_comments": b"# a spec with nothing in it\n# but comments\n",
    "only_whitespace": b" \n\t\r\n\f",
    "invalid_utf8": b"dataset caf\xe9 {\n}\n",
    "truncated_utf8": b'let x = "\xe2\x82',
    "nul_bytes": b"dataset d {\x00\x00}",
    "utf16": "dataset d { }".encode("utf-16"),
    "bom": b"\xef\xbb\xbf# comment\n",
    "crlf": b'dataset d {\r\n  source csv("x")\r\n}\r\n',
    "cr_only": b'dataset d {\r  source csv("x")\r}\r',
    "form_feed": b"\x0c\x0c",
    "lone_brace": b"{",
    "lone_quote": b'"',
    "lone_slash": b"/",
    "lone_hash": b"#",
}


@pytest.mark.parametrize("data", SPECIAL.values(), ids=SPECIAL.keys())
def test_special_files(workdir: Path, data: bytes) -> None:
    for fmt in ("short", "json", "rich"):
        check_bytes(workdir, data, fmt)


def test_directory_dev_null_and_odd_paths(workdir: Path) -> None:
    loop = workdir / "loop.fm"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    odd = workdir / "spëc ✓ [1].fm"
    odd.write_text("dataset d { }", encoding="utf-8")
    for path, wanted in ((workdir, 2), ("/dev/null", 0), (loop, 2), (odd, 1), ("", 2)):
        for fmt in ("short", "json", "rich"):
            code, out, err = run_cli("check", "--format", fmt, path)
            assert_handled(code, out, err, fmt)
            assert code == wanted, (path, err)


def test_file_too_large(workdir: Path) -> None:
    path = workdir / "too_large.fm"
    with path.open("wb") as handle:
        handle.truncate(17 * MEGABYTE)  # sparse: fmc must refuse before reading it
    code, out, err = run_cli("check", "--format", "short", path)
    assert_handled(code, out, err)
    assert "error[FM0003]" in err


# ---- the same through a real process ----------------------------------------------


def fmc_process(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "FMC_DEBUG"}
    env.update(PYTHONPATH=str(ROOT), NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "fmlang", *map(str, args)],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    "data",
    [
        DEEP["parentheses"].encode(),
        DEEP["plus_chain"].encode(),
        DEEP["blocks"].encode(),
        HUGE["name"].encode(),
        SPECIAL["invalid_utf8"],
        SPECIAL["nul_bytes"],
        b"",
    ],
    ids=["parentheses", "plus_chain", "blocks", "megabyte_name", "invalid_utf8", "nul", "empty"],
)
def test_subprocess(workdir: Path, data: bytes) -> None:
    path = workdir / "process.fm"
    path.write_bytes(data)
    for fmt in ("rich", "json"):
        done = fmc_process("check", "--format", fmt, path)
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        assert_handled(done.returncode, out, err, fmt)


def test_subprocess_special_paths(workdir: Path) -> None:
    for path, wanted in ((workdir, 2), ("/dev/null", 0), (workdir / "absent.fm", 2)):
        done = fmc_process("check", path)
        err = done.stderr.decode(errors="replace")
        assert done.returncode == wanted, err
        assert TRACEBACK not in err
        assert wanted == 0 or "error[FM0001]" in err

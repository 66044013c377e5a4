"""Specs that check clean never crash later, and hostile files cannot hang, exhaust or leak.

- every numeric setting has a bounded domain, and values outside it are FM0304 at the value;
- files are read bounded and only when regular (FIFOs, devices and directories are refused
  before a byte is read), imports are `.fm` specs within a total budget, and a file that is
  not a text spec is never quoted;
- bidirectional controls are FM0108 and are never printed raw;
- a Python labeling function cannot exit the run, and the spec folder leaves `sys.path`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmlang.api import check_paths, check_text
from fmlang.check import loader, schema
from fmlang.check.kinds import Between, Block, Call, Int, Kind, Real, Reals
from fmlang.check.reading import read_bounded
from fmlang.diagnostics import render
from fmlang.errors import StageError
from tests.data_helpers import GRANT, run_spec, write_csv

SECRET = "TOPSECRET-root:x:0:0"
FIFO_OK = hasattr(os, "mkfifo")
MEMORY_CAP = 3 * 2**30  # `fmc check` needs well under 1 GiB


def _codes(text: str, tmp_path: Path) -> list[tuple[str, int]]:
    result = check_text(text, str(tmp_path / "spec.fm"), tmp_path)
    return [(d.code, d.primary_span.line if d.primary_span else 0) for d in result.diagnostics]


def _fmc(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`fmc ARGS` in a subprocess, so that a hang fails the test instead of stalling it, with
    its memory capped where the platform allows, so that an unbounded read fails fast."""
    command = [sys.executable, "-m", "fmlang", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_cap_memory if sys.platform == "linux" else None)  # fmt: skip


def _cap_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _rendered(paths: list[Path]) -> str:
    result = check_paths(paths)
    return "\n".join(
        text for d in result.diagnostics for text, _ in render.excerpt_lines(d, result.sources)
    )


# ---- numeric settings ------------------------------------------------------------------


def _numeric_kinds(table: dict[str, Kind], where: str) -> list[tuple[str, Kind]]:
    out: list[tuple[str, Kind]] = []
    for key, kind in table.items():
        if isinstance(kind, Block):
            out += _numeric_kinds(kind.settings, f"{where}.{key}")
        elif isinstance(kind, Call):
            for head, keywords in kind.heads.items():
                out += _numeric_kinds(keywords, f"{where}.{key}({head})")
        elif isinstance(kind, Int | Real | Between | Reals):
            out.append((f"{where}.{key}", kind))
    return out


NUMERIC = [
    item
    for name, table in {**schema.BLOCKS, "adapter": schema.ADAPTERS["lora"]}.items()
    for item in _numeric_kinds(table, name)
]


@pytest.mark.parametrize("name,kind", NUMERIC, ids=[n for n, _ in NUMERIC])
def test_every_numeric_setting_is_bounded_and_explained(name: str, kind: Kind) -> None:
    assert isinstance(kind, Int | Real | Between | Reals)
    assert kind.min is not None and kind.highest is not None, f"{name} has an open-ended range"
    assert kind.why, f"{name} does not say where its range comes from"


TRAIN = """\
import std.models.minilm_l6
dataset d {
  source csv("d.csv")
  schema { t: text; y: label[a, b] @gold }
  split { train 80%, test 20% by hash(t) }
}
model m {
  base minilm_l6
  task embed
  adapter lora(rank = 8, targets = [query])
  train { data = d.train, input = t
    SETTING
  }
}
"""


@pytest.mark.parametrize(
    "setting",
    [
        "seed = 4294967296",  # numpy: `Seed must be between 0 and 2**32 - 1` at run time
        "lr = 1e999",  # an infinite learning rate
        "lr = 0",
        "max_steps = 9223372036854775808",  # trains forever
        "batch = 100000000000000000000",
        "epochs = 0",
        "warmup = 1",  # FM0806 at build time
        "seq_len = 100000000000000000000",
        "grad_accum = 100000000",
        "dp { epsilon = 8, delta = 1 }",
    ],
)
def test_out_of_domain_training_settings_are_refused_at_the_value(
    setting: str, tmp_path: Path
) -> None:
    assert ("FM0304", 12) in _codes(TRAIN.replace("SETTING", setting), tmp_path)


@pytest.mark.parametrize(
    "setting", ["seed = 4294967295", "lr = 10", "max_steps = 1000000000", "warmup = 0.99"]
)
def test_values_at_the_bounds_pass(setting: str, tmp_path: Path) -> None:
    assert not [c for c in _codes(TRAIN.replace("SETTING", setting), tmp_path) if c[0] == "FM0304"]


def test_out_of_range_message_says_the_range_and_why(tmp_path: Path) -> None:
    result = check_text(TRAIN.replace("SETTING", "seed = 4294967296"), "s.fm", tmp_path)
    found = next(d for d in result.diagnostics if d.code == "FM0304")
    assert "from 0 to 4,294,967,295" in found.message
    assert found.help and "2^32" in found.help


def test_merge_density_and_weights_are_bounded(tmp_path: Path) -> None:
    text = (
        "import std.models.tiny_causal_lm\n"
        "model a { base tiny_causal_lm; task generate; adapter lora(rank = 8) }\n"
        "model b { base tiny_causal_lm; task generate; adapter lora(rank = 8) }\n"
        "merge ab {\n  models [a, b]\n  method dare_linear(density = 0)\n"
        "  weights [0.5, 1e999]\n}\n"
    )
    codes = _codes(text, tmp_path)
    assert ("FM0304", 6) in codes and ("FM0304", 7) in codes


def test_a_zero_bandwidth_is_refused_before_the_cost_model_divides_by_it(tmp_path: Path) -> None:
    text = (
        "import std.models.minilm_l6\n"
        "hardware box { kind cpu; cores 2; memory 4GiB; bandwidth 0GB/s; peak_fp32 1TFLOPS }\n"
        "model m { base minilm_l6; task embed }\n"
        "constraints m { latency.p95 <= 50ms on box }\n"
    )
    result = check_text(text, "s.fm", tmp_path, verify=True)
    codes = [d.code for d in result.diagnostics]
    assert "FM0304" in codes and "FM0901" not in codes


def test_a_huge_replica_range_is_refused_not_enumerated(tmp_path: Path) -> None:
    spec = tmp_path / "r.fm"
    spec.write_text(
        "import std.models.minilm_l6\nimport std.hardware.cpu_2core\n"
        "model m { base minilm_l6; task embed }\n"
        "constraints m { latency.p95 <= 50ms on cpu_2core }\n"
        "deploy m { kserve { replicas = auto in 1..100000000, hardware = cpu_2core } }\n",
        encoding="utf-8",
    )
    done = _fmc("check", "--format", "short", spec.name, cwd=tmp_path)  # hung before
    assert done.returncode == 1 and "FM0304" in done.stderr + done.stdout


def test_a_deployment_cannot_serve_past_its_base_models_positions(tmp_path: Path) -> None:
    text = (
        "import std.models.minilm_l6\nmodel m { base minilm_l6; task embed }\n"
        "deploy m {\n  max_seq 100000\n  local { port = 8080 }\n}\n"
    )
    assert ("FM0333", 4) in _codes(text, tmp_path)


# ---- hostile files ---------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_check_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    done = _fmc("check", "--format", "short", "/dev/zero", cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert "FM0001" in done.stderr + done.stdout and "character device" in done.stderr + done.stdout


@pytest.mark.skipif(not FIFO_OK, reason="needs named pipes")
def test_a_fifo_is_refused_without_blocking_as_root_or_import(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.fm")
    (tmp_path / "main.fm").write_text('import "pipe.fm"\n', encoding="utf-8")
    root = _fmc("check", "--format", "short", "pipe.fm", cwd=tmp_path, timeout=30)
    assert root.returncode == 2 and "named pipe" in root.stderr + root.stdout
    imported = _fmc("check", "--format", "short", "main.fm", cwd=tmp_path, timeout=30)
    assert "main.fm:1:1: error[FM0202]" in imported.stderr + imported.stdout


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_importing_dev_zero_directly_or_through_a_symlink_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "zero.fm").symlink_to("/dev/zero")
    (tmp_path / "main.fm").write_text('import "/dev/zero"\nimport "zero.fm"\n', encoding="utf-8")
    done = _fmc("check", "--format", "short", "main.fm", cwd=tmp_path, timeout=30)
    lines = (done.stderr + done.stdout).splitlines()
    assert [line.split(": ")[0:2] for line in lines if "error[" in line] == [
        ["main.fm:1:1", "error[FM0207]"],
        ["main.fm:2:1", "error[FM0207]"],
    ]


def test_reads_are_bounded_whatever_the_size_says(tmp_path: Path) -> None:
    path = tmp_path / "big.fm"
    path.write_bytes(b"#" * 1000)
    assert read_bounded(path, 10) is None
    assert read_bounded(path, 5000) == b"#" * 1000
    proc = Path("/proc/self/status")  # a regular file that reports a size of 0
    if proc.exists() and proc.stat().st_size == 0:
        assert read_bounded(proc, 10) is None


@pytest.mark.skipif(not Path(os.devnull).exists(), reason="needs a null device")
def test_the_null_device_reads_as_an_empty_file() -> None:
    assert read_bounded(Path(os.devnull), 10) == b""


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.fm").mkdir()
    (tmp_path / "main.fm").write_text('import "dir.fm"\n', encoding="utf-8")
    found = check_paths([tmp_path / "main.fm"]).diagnostics
    assert [d.code for d in found] == ["FM0202"] and "directory" in found[0].message


def _chain(tmp_path: Path, count: int) -> Path:
    for i in range(count):
        follow = f'import "f{i + 1}.fm"\n' if i + 1 < count else ""
        (tmp_path / f"f{i}.fm").write_text(f"{follow}let c{i} = {i}\n", encoding="utf-8")
    return tmp_path / "f0.fm"


def test_imports_count_toward_a_file_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_PROGRAM_FILES", 3)
    result = check_paths([_chain(tmp_path, 6)])
    spent = [d for d in result.diagnostics if d.code == "FM0208"]
    assert len(spent) == 1 and "3 files" in spent[0].message
    assert spent[0].primary_span is not None and spent[0].primary_span.file.endswith("f2.fm")
    assert not result.ok


def test_imports_count_toward_a_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_PROGRAM_BYTES", 60)
    result = check_paths([_chain(tmp_path, 6)])
    assert [d.code for d in result.diagnostics] == ["FM0208"]


def test_a_non_spec_import_is_not_read_or_quoted(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(f"{SECRET}\n", encoding="utf-8")
    (tmp_path / "link.fm").symlink_to(tmp_path / "secret.txt")
    spec = tmp_path / "main.fm"
    spec.write_text('import "secret.txt"\nimport "link.fm"\n', encoding="utf-8")
    shown = _rendered([spec])
    assert "FM0207" in shown and SECRET not in shown


def test_a_root_that_is_not_a_spec_is_named_but_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text(f"{SECRET}\nmore: lines\n", encoding="utf-8")
    shown = _rendered([tmp_path / "passwd"])
    assert "FM0004" in shown and "TOPSECRET" not in shown
    assert not re.search(r"^\s*\d+ \|", shown, re.MULTILINE), "a source line is shown"


@pytest.mark.parametrize("data", [f"{SECRET}\x00\n".encode(), f"{SECRET}\xff\n".encode("latin-1")])
def test_a_binary_or_non_utf8_spec_is_not_quoted(data: bytes, tmp_path: Path) -> None:
    (tmp_path / "bad.fm").write_bytes(data)
    shown = _rendered([tmp_path / "bad.fm"])
    assert "FM0002" in shown and "TOPSECRET" not in shown
    assert not re.search(r"^\s*\d+ \|", shown, re.MULTILINE), "a source line is shown"


def test_a_root_not_named_fm_that_starts_like_a_spec_is_quoted(tmp_path: Path) -> None:
    (tmp_path / "spec.txt").write_text('dataset d {\n  sourse csv("d.csv")\n}\n', encoding="utf-8")
    shown = _rendered([tmp_path / "spec.txt"])
    assert "FM0004" not in shown and 'sourse csv("d.csv")' in shown


# ---- bidirectional controls ------------------------------------------------------------


def test_bidi_controls_are_errors_and_never_printed_raw(tmp_path: Path) -> None:
    spec = tmp_path / "s.fm"
    spec.write_text('let a = "x"  # ok \u202e } \u2066\nlet b = "\u2069"\n', encoding="utf-8")
    result = check_paths([spec])
    found = [(d.code, d.primary_span.line, d.primary_span.column)
             for d in result.diagnostics if d.primary_span]  # fmt: skip
    assert found == [("FM0108", 1, 19), ("FM0108", 1, 23), ("FM0108", 2, 10)]
    shown = _rendered([spec]) + "\n".join(render.short(d) for d in result.diagnostics)
    assert "<U+202E>" in shown and not any(c in shown for c in "\u202e\u2066\u2069")


# ---- Python labeling functions ---------------------------------------------------------

SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema { id: string @id; text: text }
GRANT}

labels l on c {
  classes [ham, spam]
  lf py: python("FUNCTION")
  model majority(tie = abstain)
}
"""


@pytest.fixture
def lf_project(tmp_path: Path) -> Iterator[Path]:
    write_csv(tmp_path / "c.csv", ["id", "text"], [["1", "private row text"], ["2", "b"]])
    (tmp_path / "user_lfs.py").write_text(
        "import sys\n"
        "def leave(row):\n    sys.exit(row)\n"
        "def interrupt(row):\n    raise KeyboardInterrupt\n"
        "def fine(row):\n    return 'spam'\n"
    )
    yield tmp_path
    sys.modules.pop("user_lfs", None)


def _lf_spec(project: Path, function: str) -> Path:
    spec = project / "s.fm"
    spec.write_text(SPEC.replace("GRANT", GRANT).replace("FUNCTION", function), encoding="utf-8")
    return spec


@pytest.mark.parametrize("function", ["sys:exit", "user_lfs:leave"])
def test_a_labeling_function_that_exits_is_reported(function: str, lf_project: Path) -> None:
    with pytest.raises(StageError) as caught:
        run_spec(_lf_spec(lf_project, function), lf_project / "b")
    found = caught.value.diagnostics[0]
    assert found.code == "FM0706" and "sys.exit" in found.message
    assert "private row text" not in found.message  # the exit code was the row


def test_ctrl_c_in_a_labeling_function_still_stops_the_run(lf_project: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_spec(_lf_spec(lf_project, "user_lfs:interrupt"), lf_project / "b")


def test_the_spec_folder_leaves_sys_path(lf_project: Path) -> None:
    before = list(sys.path)
    try:
        run_spec(_lf_spec(lf_project, "user_lfs:fine"), lf_project / "b")
        assert sys.path == before
    finally:
        sys.path[:] = before

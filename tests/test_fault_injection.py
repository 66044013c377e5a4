"""`fmc run` under the faults an unlucky operator meets: kill -9 at a stage boundary, inside
a checkpoint write and after training; bit flips, truncations and zeroed files in every kind
of artifact (the data stage's Parquet and report, the adapter's weights and config, the
metrics, the job, the stage cache, each checkpoint file and marker); and a full disk
(ENOSPC from the atomic writer).

Each fault is followed by a rerun of the same command, which must never use a wrong
artifact (a damaged output reruns its stage, saying which file changed; a damaged
checkpoint is discarded, saying why, for the last one that verifies), never exit 101, and
end with exactly the bytes of an uninterrupted run (the reference is made by another
process, with another PYTHONHASHSEED).

One project (the tiny Llama, 4 steps, a checkpoint every 2) is run once per module; each
test starts from a copy of that build folder at the same path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fmlang.backends.train.job import DPSettings, TrainJob
from fmlang.backends.train.trainer import train
from tests.data_helpers import TESTER
from tests.test_run_train import project
from tests.test_train_tiny import qa_data, tiny_job

pytest.importorskip("torch")
pytest.importorskip("peft")

__all__ = ["qa_data"]  # a fixture shared with test_train_tiny (tiny_model: conftest)

ROOT = Path(__file__).resolve().parent.parent
TARGETS = "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
MODEL = "run/models/helper"
ADAPTER = f"{MODEL}/adapter"
CHECKPOINTS = f"{MODEL}/checkpoints"


@dataclass(frozen=True)
class Project:
    spec: Path
    build: Path
    pristine: Path  # the uninterrupted run's build folder, never run in again

    def fmc_command(self) -> list[str]:
        return ["run", str(self.spec), "-o", str(self.build), "--until", "train",
                "--as", TESTER, "--format", "short"]  # fmt: skip


def _env(hash_seed: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": str(hash_seed)}  # fmt: skip


def fmc_process(
    proj: Project, point: str = "none", hash_seed: int = 0
) -> subprocess.CompletedProcess[str]:
    """`fmc run` in a process of its own, killed by SIGKILL at `point` (tests/fault_points)."""
    command = [sys.executable, "-m", "tests.fault_points", point, *proj.fmc_command()]
    return subprocess.run(
        command, env=_env(hash_seed), capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def fmc_here(proj: Project, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`fmc run` in this process, as the console script runs it: its exit code (101 for
    an exception that escapes) and what it printed."""
    from fmlang.cli.main import main

    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["fmc", *proj.fmc_command()]
    try:
        main()
        code: Any = 0
    except SystemExit as exited:
        code = exited.code
    finally:
        sys.argv = argv
    printed = capsys.readouterr()
    return int(code or 0), printed.out + printed.err


@pytest.fixture(scope="module")
def reference(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The project and the build folder of one uninterrupted run (PYTHONHASHSEED=0)."""
    folder = tmp_path_factory.mktemp("faults")
    spec = project(folder, tiny_model, "100000")
    text = spec.read_text(encoding="utf-8").replace("[q_proj, v_proj]", TARGETS)
    every = "    lr         = 1e-3\n"
    text = text.replace(every, every + "    checkpoint_every = 2\n")
    spec.write_text(text, encoding="utf-8")
    proj = Project(spec, folder / "build", folder / "pristine")
    done = fmc_process(proj)
    assert done.returncode == 0, done.stderr
    shutil.copytree(proj.build, proj.pristine, symlinks=True)
    return proj


@pytest.fixture
def proj(reference: Project) -> Project:
    """The reference project with its build folder as the uninterrupted run left it."""
    shutil.rmtree(reference.build, ignore_errors=True)
    shutil.copytree(reference.pristine, reference.build, symlinks=True)
    return reference


# ---- faults ----------------------------------------------------------------------------


def flip(path: Path) -> None:
    """One bit flipped in the middle of the file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path: Path) -> None:
    """The right length, every byte zero (what a crash can leave of unsynced data)."""
    path.write_bytes(bytes(path.stat().st_size))


def interrupted_after(proj: Project, step: int) -> None:
    """The build folder as a run killed right after checkpoint `step` was complete leaves
    it: later checkpoints, the final adapter, the metrics and the train stage's cache entry
    not yet written."""
    folder = proj.build / CHECKPOINTS
    for path in folder.glob("checkpoint-*"):
        if int(path.name.split("-")[1]) > step:
            shutil.rmtree(path)
    shutil.rmtree(proj.build / ADAPTER)
    (proj.build / MODEL / "train_result.json").unlink()
    (proj.build / MODEL / "metrics.json").unlink()
    cache = proj.build / "run/cache.json"
    entries = json.loads(cache.read_text(encoding="utf-8"))
    del entries["train:helper"]
    cache.write_text(json.dumps(entries), encoding="utf-8")


@contextmanager
def full_disk(when: Callable[[Path, bytes], bool]) -> Iterator[None]:
    """The atomic writer fails with ENOSPC for the write `when(path, content)` picks,
    once half of the content has reached the temporary file."""
    from fmlang import atomic

    real = atomic.replacing

    @contextmanager
    def replacing(path: Path) -> Iterator[Path]:
        with real(path) as tmp:
            yield tmp
            written = tmp.read_bytes() if tmp.exists() else b""
            if when(path, written):
                tmp.write_bytes(written[: len(written) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "replacing", replacing)
        yield


# ---- what every rerun must end with ----------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def final_bytes(build: Path) -> dict[str, str]:
    """The sha256 of every file of the outputs an uninterrupted run must reproduce."""
    folders = [build / ADAPTER, build / "run/data/tickets"]
    files = [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()]
    files.append(build / MODEL / "job.json")
    return {p.relative_to(build).as_posix(): digest(p) for p in files}


def assert_as_uninterrupted(proj: Project, resumed_from: int | None = None) -> None:
    """The same output bytes as the uninterrupted run, four steps and no fifth checkpoint,
    the same evaluation, one registered version."""
    assert final_bytes(proj.build) == final_bytes(proj.pristine)
    trained = json.loads((proj.build / MODEL / "train_result.json").read_text())
    assert trained["steps"] == 4
    if resumed_from is not None:
        assert trained["resumed_from_step"] == resumed_from
    steps = sorted(p.name for p in (proj.build / CHECKPOINTS).glob("checkpoint-*"))
    assert steps == ["checkpoint-2", "checkpoint-4"]
    metrics = json.loads((proj.build / MODEL / "metrics.json").read_text())
    expected = json.loads((proj.pristine / MODEL / "metrics.json").read_text())
    assert metrics["eval"] == expected["eval"]
    index = json.loads((proj.build / "registry/index.json").read_text())
    assert [v["name"] for v in index["versions"]] == ["helper"]


# ---- damaged stage outputs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "damage", "stage"),
    [
        ("run/data/tickets/train.parquet", flip, "data:tickets"),
        ("run/data/tickets/test.parquet", truncate, "data:tickets"),
        ("run/data/tickets/report.json", zero, "data:tickets"),
        (f"{ADAPTER}/adapter_model.safetensors", flip, "train:helper"),
        (f"{ADAPTER}/adapter_model.safetensors", zero, "train:helper"),
        (f"{ADAPTER}/adapter_config.json", truncate, "train:helper"),
        (f"{MODEL}/metrics.json", flip, "train:helper"),
        (f"{MODEL}/job.json", flip, "train:helper"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value).rsplit("/", 1)[-1]),
)
def test_a_damaged_stage_output_reruns_its_stage(
    proj: Project, capsys: pytest.CaptureFixture[str], relative: str,
    damage: Callable[[Path], None], stage: str,
) -> None:  # fmt: skip
    damage(proj.build / relative)
    code, printed = fmc_here(proj, capsys)
    assert code == 0, printed
    said = " ".join(printed.split())  # the run's console wraps long lines
    assert f"`{stage}` runs again: `{relative}` changed since it was written" in said
    assert_as_uninterrupted(proj)


def test_an_unreadable_stage_cache_reruns_every_stage_without_training_more(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    truncate(proj.build / "run/cache.json")
    code, printed = fmc_here(proj, capsys)
    assert code == 0, printed
    assert "`run/cache.json` cannot be read" in printed
    assert_as_uninterrupted(proj, resumed_from=4)  # the finished run, not a fifth step


# ---- damaged checkpoints ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("damages", "resumed_from"),
    [
        ({"checkpoint-4/adapter_model.safetensors": flip}, 2),
        ({"checkpoint-4/optimizer.pt": truncate}, 2),
        ({"checkpoint-4/rng_state.pth": zero}, 2),
        ({"checkpoint-4/fm_checkpoint.json": truncate}, 2),
        ({"checkpoint-4/trainer_state.json": flip, "checkpoint-2/scheduler.pt": truncate}, 0),
    ],
    ids=["weights-flipped", "optimizer-truncated", "rng-zeroed", "marker-truncated", "both"],
)
def test_a_damaged_checkpoint_is_discarded_for_the_last_one_that_verifies(
    proj: Project, capsys: pytest.CaptureFixture[str], damages: dict[str, Callable[[Path], None]],
    resumed_from: int,
) -> None:  # fmt: skip
    interrupted_after(proj, 4)
    for relative, damage in damages.items():
        damage(proj.build / CHECKPOINTS / relative)
    code, printed = fmc_here(proj, capsys)
    assert code == 0, printed
    for relative in damages:
        folder, name = relative.split("/")
        assert f"discarded `{folder}`" in printed
        assert name in printed.split(f"discarded `{folder}`")[1].splitlines()[0]
    assert ("training from the start" if resumed_from == 0 else "resuming from") in printed
    assert_as_uninterrupted(proj, resumed_from=resumed_from)


def dp_job(model: Path, data: Path, output: Path) -> TrainJob:
    job = tiny_job(model, data, output, max_steps=4, save_steps=2)
    return job.model_copy(update={"dp": DPSettings(epsilon=8.0, delta=1e-5, max_grad_norm=1.0)})


@pytest.fixture(scope="module")
def dp_whole(tiny_model: Path, qa_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted DP-SGD run of 4 steps, checkpointed every 2."""
    pytest.importorskip("opacus")
    output = tmp_path_factory.mktemp("dp") / "whole"
    assert train(dp_job(tiny_model, qa_data, output), progress=False).steps == 4
    return output


@pytest.mark.parametrize(
    ("relative", "damage", "resumed_from", "said"),
    [
        ("checkpoint-4/trainable.safetensors", flip, 2, "discarded `checkpoint-4`"),
        ("checkpoint-4/dp_state.json", truncate, 2, "discarded `checkpoint-4`"),
        ("dp_noise_seed", zero, 4, "drawing a new noise seed"),  # the checkpoint has the rest
    ],
    ids=["weights-flipped", "state-truncated", "seed-zeroed"],
)
def test_dp_sgd_resumes_from_its_last_verified_checkpoint(
    dp_whole: Path, tiny_model: Path, qa_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], relative: str, damage: Callable[[Path], None],
    resumed_from: int, said: str,
) -> None:  # fmt: skip
    cut = tmp_path / "cut"
    shutil.copytree(dp_whole, cut)
    shutil.rmtree(cut / "adapter")
    (cut / "train_result.json").unlink()
    damage(cut / "checkpoints" / relative)
    result = train(dp_job(tiny_model, qa_data, cut), progress=False)
    assert said in capsys.readouterr().err
    assert result.resumed_from_step == resumed_from and result.steps == 4
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert digest(cut / "adapter" / name) == digest(dp_whole / "adapter" / name)


# ---- kill -9 ---------------------------------------------------------------------------


def test_killed_inside_a_checkpoint_write_resumes_from_the_one_before(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(proj.build / "run")  # from the start: the data stage runs too
    killed = fmc_process(proj, "inside-checkpoint-write", hash_seed=1)
    assert killed.returncode == -9, killed.stderr
    assert not (proj.build / CHECKPOINTS / "checkpoint-4/fm_checkpoint.json").exists()
    code, printed = fmc_here(proj, capsys)
    assert code == 0, printed
    assert "discarded `checkpoint-4`: incomplete" in printed
    assert_as_uninterrupted(proj, resumed_from=2)


def test_killed_after_training_finishes_without_another_step(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    interrupted_after(proj, 2)
    killed = fmc_process(proj, "after-training", hash_seed=1)
    assert killed.returncode == -9, killed.stderr
    assert (proj.build / ADAPTER).is_dir() and not (proj.build / MODEL / "metrics.json").exists()
    code, printed = fmc_here(proj, capsys)
    assert code == 0, printed
    assert_as_uninterrupted(proj, resumed_from=4)


def test_killed_between_stages_a_new_process_ends_with_the_same_bytes(proj: Project) -> None:
    """The rerun is a process with another PYTHONHASHSEED than the reference's: peft holds
    `target_modules` as a set, whose order follows the hash seed."""
    shutil.rmtree(proj.build / "run")
    killed = fmc_process(proj, "after-data-stage", hash_seed=1)
    assert killed.returncode == -9, killed.stderr
    assert not (proj.build / MODEL).exists()
    rerun = fmc_process(proj, hash_seed=1)
    assert rerun.returncode == 0, rerun.stderr
    assert "runs again" not in rerun.stderr  # the killed run's data stage verifies
    raw = "checkpoint-4/adapter_config.json"  # as peft wrote it: in each process's set order
    orders = [
        json.loads((build / CHECKPOINTS / raw).read_text())["target_modules"]
        for build in (proj.build, proj.pristine)
    ]
    assert orders[0] != orders[1], "the two processes must order the set differently"
    saved = json.loads((proj.build / ADAPTER / "adapter_config.json").read_text())
    assert saved["target_modules"] == sorted(orders[0])
    built = json.loads((proj.build / "adapters/helper/adapter_config.json").read_text())
    assert built["target_modules"] == sorted(orders[0])
    assert_as_uninterrupted(proj, resumed_from=0)


# ---- a full disk -----------------------------------------------------------------------


def _marker_of_4(path: Path, content: bytes) -> bool:
    return path.name == "fm_checkpoint.json" and path.parent.name == "checkpoint-4"


def _metrics(path: Path, content: bytes) -> bool:
    return path.name == "metrics.json"


def _cache_with_training(path: Path, content: bytes) -> bool:
    return path.name == "cache.json" and b"train:helper" in content


@pytest.mark.parametrize(
    ("when", "resumed_from"),
    [(_marker_of_4, 2), (_metrics, 4), (_cache_with_training, 4)],
    ids=["checkpoint-marker", "metrics", "stage-cache"],
)
def test_a_full_disk_is_a_diagnostic_and_the_rerun_completes(
    proj: Project, capsys: pytest.CaptureFixture[str], when: Callable[[Path, bytes], bool],
    resumed_from: int,
) -> None:  # fmt: skip
    interrupted_after(proj, 2)
    with full_disk(when):
        code, printed = fmc_here(proj, capsys)
    assert code == 2, printed
    assert "error[FM0722]" in printed and "No space left on device" in printed
    code, printed = fmc_here(proj, capsys)
    assert code == 0, printed
    if resumed_from == 2:
        assert "discarded `checkpoint-4`: incomplete" in printed
    assert_as_uninterrupted(proj, resumed_from=resumed_from)

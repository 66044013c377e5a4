"""The training worker as a process: killed with SIGKILL after a checkpoint and rerun, it
ends with exactly the adapter of an uninterrupted run; a broken job file is a diagnostic,
not a trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from fmlang.backends.train import checkpoints  # noqa: E402
from fmlang.backends.train.job import TrainJob  # noqa: E402
from fmlang.backends.train.worker import main  # noqa: E402
from tests.test_train_tiny import (  # noqa: E402
    adapter_weights,
    assert_same_weights,
    qa_data,
    tiny_job,
)

__all__ = ["qa_data"]  # a fixture shared with test_train_tiny (tiny_model: conftest)

ROOT = Path(__file__).resolve().parent.parent
WORKER = ("-m", "fmlang.backends.train.worker")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def start_and_kill_after_checkpoint(job: TrainJob, folder: Path) -> None:
    """Start the worker, SIGKILL it as soon as one checkpoint is complete."""
    path = folder / "job.json"
    job.write(path)
    command = [sys.executable, *WORKER, "--job", str(path), "--no-progress"]
    process = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    try:
        while checkpoints.last_complete(job.output / "checkpoints") is None:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        if process.stderr:
            process.stderr.close()


def test_kill_and_resume_matches_an_uninterrupted_run(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    settings = {"max_steps": 120, "save_steps": 5, "logging_steps": 10}
    killed = tiny_job(tiny_model, qa_data, tmp_path / "killed", **settings)
    start_and_kill_after_checkpoint(killed, tmp_path)
    assert process_was_killed_mid_run(killed.output)
    whole = tiny_job(tiny_model, qa_data, tmp_path / "whole", **settings)
    whole.write(tmp_path / "whole.json")
    with one_thread():  # as in the killed process (OMP_NUM_THREADS=1)
        assert main(["--job", str(tmp_path / "job.json"), "--no-progress"]) == 0  # the rerun
        assert main(["--job", str(tmp_path / "whole.json"), "--no-progress"]) == 0
    result = json.loads((killed.output / "train_result.json").read_text())
    assert 0 < result["resumed_from_step"] < 120 and result["steps"] == 120
    assert_same_weights(adapter_weights(killed.output), adapter_weights(whole.output))


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def process_was_killed_mid_run(output: Path) -> bool:
    return not (output / "adapter").exists() and not (output / "train_result.json").exists()


def test_a_broken_job_file_is_a_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text("{not json")
    command = [sys.executable, *WORKER, "--job", str(tmp_path / "job.json")]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error[FM0831]" in done.stderr and "Traceback" not in done.stderr

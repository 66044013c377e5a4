"""SIGTERM and SIGINT stop a training worker at a safe point: it finishes the current step,
saves a complete checkpoint, exits with 128 + the signal's number and saves no adapter;
rerunning resumes, and the final weights equal an uninterrupted run's. For the Trainer
and for the DP-SGD loop, each stopped twice (after the first checkpoint and mid-way)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from fmlang.backends.train import checkpoints, dp_state
from fmlang.backends.train.job import DPSettings, TrainJob
from fmlang.backends.train.worker import main
from tests.test_train_tiny import (
    adapter_weights,
    assert_same_weights,
    qa_data,
    tiny_job,
)
from tests.test_train_worker import one_thread

__all__ = ["qa_data"]  # a fixture shared with test_train_tiny (tiny_model: conftest)

ROOT = Path(__file__).resolve().parent.parent
STOPPED = re.compile(r"(SIG\w+) received; stopped after step (\d+); checkpoint saved")
RUNS = {  # steps, checkpoint interval, DP
    "trainer": (120, 10, None),
    "dp-sgd": (40, 5, DPSettings(epsilon=8.0, delta=1e-5, max_grad_norm=1.0)),
}


def job_for(kind: str, model: Path, data: Path, output: Path) -> TrainJob:
    steps, every, dp = RUNS[kind]
    job = tiny_job(model, data, output, max_steps=steps, save_steps=every, logging_steps=5)
    return job.model_copy(update={"dp": dp})


def run_until_signalled(job_file: Path, job: TrainJob, at_step: int, sig: signal.Signals,
                        log: Path) -> int:  # fmt: skip
    """Start the worker, send `sig` once a checkpoint of `at_step` or later is complete,
    check how it stopped; returns the step it stopped after."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "fmlang.backends.train.worker", "--job", str(job_file),
               "--no-progress"]  # fmt: skip
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for_checkpoint(job, process, at_step, log)
            process.send_signal(sig)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    said = log.read_text()
    assert code == 128 + sig, said
    found = STOPPED.search(said)
    assert found and found.group(1) == sig.name, said
    step = int(found.group(2))
    assert step >= at_step and "Traceback" not in said
    last = checkpoints.last_complete(job.output / "checkpoints")
    assert last is not None and last.name == f"checkpoint-{step}"  # this step's, complete
    assert not (job.output / "adapter").exists()  # no final adapter, no result
    assert not (job.output / "train_result.json").exists()
    return step


def wait_for_checkpoint(job: TrainJob, process: subprocess.Popen[bytes], step: int,
                        log: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + 300
    while True:
        last = checkpoints.last_complete(job.output / "checkpoints")
        if last is not None and int(last.name.split("-")[1]) >= step:
            return
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_signals_stop_at_a_checkpoint_and_resuming_matches_an_unstopped_run(
    kind: str, tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    steps, every, _ = RUNS[kind]
    stopped = job_for(kind, tiny_model, qa_data, tmp_path / "stopped")
    stopped.write(tmp_path / "stopped.json")
    first = run_until_signalled(
        tmp_path / "stopped.json", stopped, every, signal.SIGTERM, tmp_path / "first.log"
    )
    second = run_until_signalled(
        tmp_path / "stopped.json", stopped, steps // 2, signal.SIGINT, tmp_path / "second.log"
    )
    assert first < second < steps
    whole = job_for(kind, tiny_model, qa_data, tmp_path / "whole")
    whole.write(tmp_path / "whole.json")
    if stopped.dp is not None:  # the same secret noise seed, so the same noise
        (whole.output / "checkpoints").mkdir(parents=True)
        shutil.copy(stopped.output / "checkpoints" / dp_state.SEED_FILE,
                    whole.output / "checkpoints" / dp_state.SEED_FILE)  # fmt: skip
    with one_thread():  # as in the stopped processes (OMP_NUM_THREADS=1)
        assert main(["--job", str(tmp_path / "stopped.json"), "--no-progress"]) == 0
        assert main(["--job", str(tmp_path / "whole.json"), "--no-progress"]) == 0
    result = json.loads((stopped.output / "train_result.json").read_text())
    assert result["resumed_from_step"] == second and result["steps"] == steps
    assert_same_weights(adapter_weights(stopped.output), adapter_weights(whole.output))

"""The training worker under torchrun: two CPU processes (gloo DDP) train the tiny Llama and
write one adapter, one result and the checkpoints once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from fmlang.backends.train import checkpoints
from tests.test_train_tiny import adapter_weights, qa_data, tiny_job
from tests.test_train_worker import WORKER, _env

__all__ = ["qa_data"]  # a fixture shared with test_train_tiny (tiny_model: conftest)

TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"), reason="no torchrun")
def test_torchrun_two_cpu_processes(tiny_model: Path, qa_data: Path, tmp_path: Path) -> None:
    job = tiny_job(tiny_model, qa_data, tmp_path / "ddp", max_steps=6, save_steps=3)
    job.write(tmp_path / "job.json")
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else "torchrun"
    command = [torchrun, "--standalone", "--nproc-per-node", "2", *WORKER]
    command += ["--job", str(tmp_path / "job.json"), "--no-progress"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((job.output / "train_result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6
    assert adapter_weights(job.output)
    assert [p.name for p in checkpoints.checkpoint_steps(job.output / "checkpoints").values()] == [
        "checkpoint-3",
        "checkpoint-6",
    ]
    assert done.stdout.count("trained tiny") == 1

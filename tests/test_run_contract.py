"""`fmc run` executes the build folder, one run at a time, stops cleanly on a signal and
starts from scratch on --force; latency gates do not trust a loaded machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from fmlang.backends.load import machine_load
from fmlang.cli.main import cli
from tests.data_helpers import TESTER
from tests.test_run_train import project


def fmc_run(spec: Path, build: Path, *extra: str) -> tuple[int, str]:
    argv = ["run", str(spec), "-o", str(build), "--as", TESTER, "--until", "train", *extra]
    result = CliRunner().invoke(cli, argv)
    return result.exit_code, result.output


def train_result(build: Path) -> dict[str, object]:
    result = json.loads((build / "run/models/helper/train_result.json").read_text())
    assert isinstance(result, dict)
    return result


def test_an_edited_artifact_is_what_runs(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    assert CliRunner().invoke(cli, ["build", str(spec), "-o", str(build)]).exit_code == 0
    args_path = build / "train/helper/training_args.json"
    args = json.loads(args_path.read_text())
    assert args["max_steps"] == 4
    args["max_steps"] = 2
    args_path.write_text(json.dumps(args))
    code, output = fmc_run(spec, build)
    assert code == 0, output
    assert "train/helper/training_args.json` was edited" in output
    assert train_result(build)["steps"] == 2
    ran = json.loads((build / "run/models/helper/job.json").read_text())
    assert ran["training_args"]["max_steps"] == 2
    config = json.loads((build / "run/models/helper/adapter/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-causal-lm", "named as the build names it"
    assert str(tmp_path) not in json.dumps(config)

    # A changed spec makes the folder stale: rebuilt, the edit is gone.
    spec.write_text(spec.read_text().replace("lr         = 1e-3", "lr         = 2e-3"))
    code, output = fmc_run(spec, build)
    assert code == 0, output
    assert json.loads(args_path.read_text())["max_steps"] == 4
    assert train_result(build)["steps"] == 4


def test_a_moved_build_folder_is_still_fresh_and_force_starts_over(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    assert fmc_run(spec, build)[0] == 0
    moved = tmp_path / "moved"
    shutil.move(build, moved)
    code, output = fmc_run(spec, moved)
    assert code == 0 and "trained" not in output, output  # every stage cached
    # --force retrains from scratch: no resuming from the checkpoints of the last run
    code, output = fmc_run(spec, moved, "--force")
    assert code == 0, output
    result = train_result(moved)
    assert result["resumed_from_step"] == 0 and result["steps"] == 4


def test_a_second_run_on_the_same_folder_is_refused_or_waits(
    tmp_path: Path, tiny_model: Path
) -> None:
    from fmlang.backends.run_lock import exclusive

    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    with exclusive(build):
        code, output = fmc_run(spec, build, "--format", "short")
    assert code == 2 and "FM0721" in output, output

    released = threading.Event()

    def hold() -> None:
        with exclusive(build):
            released.wait(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    started = time.monotonic()
    code, output = fmc_run(spec, build, "--wait")
    holder.join()
    assert code == 0, output
    assert time.monotonic() - started >= 0.7, "it waited for the holder"


def test_sigterm_stops_at_a_safe_point_and_the_rerun_resumes(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    argv = [sys.executable, "-m", "fmlang", "run", str(spec), "-o", str(build), "--as", TESTER,
            "--until", "train"]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # stages start only once the handlers are installed
        seen.append(line)
        if line.startswith("data:tickets"):
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "stopped" in rest and "run the same command again" in rest
    assert not (build / "run/models/helper/adapter").exists(), "no final adapter on a stop"
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (build / "run/models/helper/adapter/adapter_config.json").exists()


def test_load_from_other_processes_is_measured() -> None:
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(2, os.cpu_count() or 1))
    ]
    try:
        time.sleep(0.5)  # let them start
        with machine_load() as load:
            time.sleep(1.0)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert load.other_cores is not None and load.other_cores >= 0.9 * min(2, load.cores)
    assert load.loaded and load.to_json()["loaded"] is True


def test_a_latency_measured_under_load_is_not_a_verdict() -> None:
    from fmlang.backends.gates import _latency
    from fmlang.ir.nodes import Constraint

    constraint = Constraint.model_construct(kind="latency", metric="p95", on_hardware="cpu_2core")
    timed = {"measured": True, "p95_ms": 10.0}
    assert _latency(constraint, {"latency": {"cpu_2core": timed}}) == (0.01, "")
    loaded = {**timed, "load": {"cores": 2, "other_cores": 1.8, "loaded": True}}
    value, why = _latency(constraint, {"latency": {"cpu_2core": loaded}})
    assert value is None and "1.8 of 2 cores" in why


def test_the_data_stage_runs_the_build_folders_sql(tmp_path: Path) -> None:
    from tests.data_helpers import one_column_dataset, rows, run_spec

    spec = one_column_dataset(tmp_path, ["ab", "abcd", "abcdef"], "    drop where length(body) < 3")
    build = tmp_path / "build"
    run_spec(spec, build, until="data")
    assert [r["body"] for r in rows(build / "run/data/d/all.parquet")] == ["abcd", "abcdef"]
    sql = build / "data/d.duckdb.sql"
    assert '(length("body") < 3)' in sql.read_text()
    sql.write_text(sql.read_text().replace('(length("body") < 3)', '(length("body") < 5)'))
    run_spec(spec, build, until="data")  # not stale: the edited SQL is what runs
    assert [r["body"] for r in rows(build / "run/data/d/all.parquet")] == ["abcdef"]


EMBED = """\
import std.models.minilm_l6

dataset notes {
  source jsonl("notes.jsonl")
  schema { body: text }
  grant read, train to "team:ml"
}

model scorer {
  base minilm_l6
  task embed
  train {
    data  = notes
    input = body
  }
}
"""


def test_a_job_on_a_whole_dataset_reads_its_rows_and_missing_columns_are_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.jsonl").write_text(
        "".join(json.dumps({"body": f"note {i}"}) + "\n" for i in range(8))
    )
    spec = tmp_path / "s.fm"
    spec.write_text(EMBED)
    build = tmp_path / "build"
    code, output = fmc_run(spec, build, "--format", "short")
    job = json.loads((build / "train/scorer/job.json").read_text())
    assert job["train_data"] == "run/data/notes/all.parquet"
    assert (build / job["train_data"]).is_file()
    assert code == 1 and "FM0372" in output and "FM0901" not in output, output


def test_new_data_trains_from_scratch_not_from_the_old_checkpoints(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The job file names the data by path, so it is byte-identical when the data changes:
    checkpoints are kept only under the same stage key (data included)."""
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    assert fmc_run(spec, build)[0] == 0
    assert (build / "run/models/helper/checkpoints/checkpoint-4").is_dir()
    rows = [{"id": f"new-{i}", "question": f"where is my order {i}?",
             "answer": "track it under orders, then shipments.", "product": "web"}
            for i in range(40)]  # fmt: skip
    with (tmp_path / "tickets.jsonl").open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    code, output = fmc_run(spec, build)
    assert code == 0, output
    result = train_result(build)
    assert result["resumed_from_step"] == 0 and result["steps"] == 4
    assert result["train_rows"] > 40

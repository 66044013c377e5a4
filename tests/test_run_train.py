"""`fmc run` through the train stage on a tiny causal LM: training, evaluation, gates, the
stage cache and the registry, in-process and fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmlang.errors import StageError
from tests.data_helpers import run_spec

SPEC = """\
import std.models.tiny_causal_lm
import std.hardware.cpu_2core

dataset tickets {
  source jsonl("tickets.jsonl")
  schema {
    id: string @id
    question: text
    answer: text
    product: category @protected
  }
  split { train 70%, test 30% by hash(id) }
  grant read, train, deploy to "team:ml"
}

model helper {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train {
    data       = tickets.train
    prompt     = question
    completion = answer
    max_steps  = 4
    lr         = 1e-3
    batch      = 4
    seed       = 3
  }
  eval {
    on      = [tickets.test]
    metrics = [perplexity]
    by      = [product]
  }
}

constraints helper {
  perplexity <= BOUND on tickets.test
}
"""


def project(tmp_path: Path, tiny_model: Path, bound: str) -> Path:
    (tmp_path / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [
        {"id": str(i), "question": f"how do I reset my password {i}?",
         "answer": "open settings, choose security, then reset password.",
         "product": ["app", "web"][i % 2]}
        for i in range(40)
    ]  # fmt: skip
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = tmp_path / "helper.fm"
    spec.write_text(SPEC.replace("BOUND", bound), encoding="utf-8")
    return spec


def test_train_stage_trains_evaluates_gates_and_registers(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    report = run_spec(spec, build, until="train")
    assert [o.stage for o in report.outcomes] == ["data:tickets", "train:helper"]
    adapter = build / "run/models/helper/adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    metrics = json.loads((build / "run/models/helper/metrics.json").read_text())
    test = metrics["eval"]["tickets.test"]
    assert test["perplexity"] > 1 and set(test["by"]["product"]["groups"]) == {"app", "web"}
    assert metrics["gates"][0]["passed"] is True
    assert metrics["train"]["steps"] == 4
    versions = json.loads((build / "registry/index.json").read_text())
    assert "helper" in json.dumps(versions)
    from fmlang.backends.registry import open_registry

    (version,) = open_registry(build).versions("helper")
    assert set(version.lineage.data_hashes) == {"data:tickets"}  # the stage it trained on
    assert version.lineage.metrics["perplexity@tickets.test"] == test["perplexity"]
    again = run_spec(spec, build, until="train")
    assert [o.skipped for o in again.outcomes] == [True, True]


def test_a_missed_gate_fails_at_the_constraint_line(tmp_path: Path, tiny_model: Path) -> None:
    from click.testing import CliRunner

    from fmlang.cli.main import cli

    spec = project(tmp_path, tiny_model, "1.5")
    build = tmp_path / "build"
    result = CliRunner().invoke(
        cli,
        ["run", str(spec), "-o", str(build), "--as", "team:ml", "--format", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    (gate,) = [d for d in json.loads(result.stdout)["diagnostics"] if d["code"] == "FM0860"]
    line = spec.read_text().splitlines().index("  perplexity <= 1.5 on tickets.test") + 1
    assert gate["labels"][0]["span"]["line"] == line
    assert "required <= 1.5" in gate["message"]


def test_training_needs_its_data_stage(tmp_path: Path, tiny_model: Path) -> None:
    from fmlang.backends.model_stage import train_stage
    from fmlang.backends.run import RunOptions, context
    from tests.data_helpers import compile_file

    spec = project(tmp_path, tiny_model, "100000")
    run_spec(spec, tmp_path / "build", until="data")
    (tmp_path / "build/run/cache.json").unlink()
    compiled = compile_file(spec)
    ctx = context(compiled, RunOptions(tmp_path / "build", spec, "train"), "")
    with pytest.raises(StageError) as caught:
        train_stage(ctx, compiled.models[0], {})
    assert caught.value.diagnostics[0].code == "FM0710"


MERGE = """
model helper_b {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train {
    data       = tickets.train
    prompt     = question
    completion = answer
    max_steps  = 2
    lr         = 1e-3
    batch      = 4
    seed       = 5
  }
}

merge both {
  models  [helper, helper_b]
  method  ties(density = 0.5)
  weights [0.6, 0.4]
  eval {
    on      = [tickets.test]
    metrics = [perplexity]
  }
}
"""


def test_merge_stage_merges_trained_adapters(tmp_path: Path, tiny_model: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = project(tmp_path, tiny_model, "100000")
    spec.write_text(spec.read_text() + MERGE, encoding="utf-8")
    build = tmp_path / "build"
    report = run_spec(spec, build, until="merge")
    assert [o.stage for o in report.outcomes][-1] == "merge:both"
    merged = build / "run/merges/both/adapter"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), merged)
    assert model is not None
    metrics = json.loads((build / "run/merges/both/metrics.json").read_text())
    assert metrics["eval"]["tickets.test"]["perplexity"] > 1
    assert run_spec(spec, build, until="merge").outcomes[-1].skipped


DEPLOY = """
deploy helper {
  local { host = "127.0.0.1", port = 18080 }
  grant query to "service:web"
}
"""


def test_fmc_serve_serves_the_trained_adapter(tmp_path: Path, tiny_model: Path) -> None:
    import httpx

    from fmlang.backends.registry import open_registry
    from fmlang.backends.serve.server import serve_in_background
    from fmlang.backends.serve_config import serve_config
    from tests.data_helpers import compile_file

    spec = project(tmp_path, tiny_model, "100000")
    spec.write_text(spec.read_text() + DEPLOY, encoding="utf-8")
    build = tmp_path / "build"
    from fmlang.api import build as build_artifacts
    from fmlang.api import check_paths

    build_artifacts(check_paths([spec], verify=True), build)
    run_spec(spec, build, until="train")
    assert compile_file(spec).deployments[0].name == "helper"
    config = serve_config(build, "helper")
    (version,) = open_registry(build).versions("helper")  # served from the registry
    assert config.adapters == {"helper": str(build / "registry/objects" / version.hash)}
    server = serve_in_background(config)
    try:
        for _ in range(300):
            if httpx.get(f"{server.url}/ready").status_code == 200:
                break
            import time

            time.sleep(0.1)
        body = {"model": "helper", "prompt": "how do I reset", "max_tokens": 4}
        answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "helper"
        unknown = httpx.post(f"{server.url}/v1/completions", json={**body, "model": "nope"})
        assert unknown.status_code == 404
    finally:
        server.stop()


def test_a_changed_job_does_not_resume_the_old_jobs_checkpoints(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    text = spec.read_text().replace(
        "    lr         = 1e-3\n", "    lr         = 1e-3\n    checkpoint_every = 2\n"
    )
    spec.write_text(text, encoding="utf-8")
    build = tmp_path / "build"
    run_spec(spec, build, until="train")
    checkpoints = build / "run/models/helper/checkpoints"
    assert any(checkpoints.iterdir())
    spec.write_text(text.replace("max_steps  = 4", "max_steps  = 6"), encoding="utf-8")
    run_spec(spec, build, until="train")
    result = json.loads((build / "run/models/helper/train_result.json").read_text())
    assert result["resumed_from_step"] == 0 and result["steps"] == 6

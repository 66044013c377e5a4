"""Deploying a model that selects its base (`base auto in [...]`).

The verifier holds the deployment's bounds for every candidate (one serving batch for all of
them, the worst case); `fmc build` writes a server.json that names every candidate's base
and says the base is resolved at run time, and refuses a vLLM target (which names its base
in the manifest); `fmc serve` serves the winner `fmc run` selected: its adapter on its own
base, checked token for token against peft's merge of the two."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.api import check_paths
from tests.data_helpers import run_spec
from tests.test_model_selection import project, tiny_b  # noqa: F401 (a fixture)

DEPLOY = """
deploy helper {
  batch = BATCH
  local { port = 8123 }
  grant query to "team:ml"
}
"""


def deployed(tmp_path: Path, tiny_model: Path, weights: tuple[Path, int], bound: str,
             batch: str = "auto in [1, 64]", extra: str = "") -> Path:  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = project(tmp_path, tiny_model, weights, bound)
    spec.write_text(spec.read_text() + DEPLOY.replace("BATCH", batch) + extra)
    return spec


def memory_rows(spec: Path) -> dict[str, float]:
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.report is not None
    return {
        row["target"]: row["estimate"]
        for row in result.report.to_json()["constraints"]
        if row["kind"] == "memory" and row.get("estimate") is not None
    }


def test_the_deployment_bounds_hold_for_every_candidate(
    tmp_path: Path,
    tiny_model: Path,
    tiny_b: tuple[Path, int],  # noqa: F811
) -> None:
    """A memory bound the smaller candidate meets at batch 64 and the larger only at batch 1:
    the one serving batch chosen is 1, since `fmc run` may pick either."""
    at = {b: memory_rows(deployed(tmp_path / str(b), tiny_model, tiny_b, "1GiB", str(b)))
          for b in (1, 64)}  # fmt: skip
    small, large = sorted(("helper+tiny_b", "helper+tiny_causal_lm"), key=lambda n: at[64][n])
    assert at[1][large] < at[64][small] < at[64][large]
    bound = int((at[64][small] + at[64][large]) / 2)
    result = check_paths([deployed(tmp_path / "auto", tiny_model, tiny_b, f"{bound}B")],
                         verify=True)  # fmt: skip
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.report is not None
    report = result.report.to_json()
    assert report["knobs"]["helper.serve_batch"] == 1
    assert not any(k.startswith("helper+") and k.endswith("serve_batch") for k in report["knobs"])
    rows = {r["target"]: r for r in report["constraints"] if r["kind"] == "memory"}
    assert rows[large]["estimate"] == pytest.approx(at[1][large])
    assert rows[large]["estimate"] <= bound and rows[small]["estimate"] <= bound


def test_build_names_every_candidate_base_and_refuses_vllm(
    tmp_path: Path,
    tiny_model: Path,
    tiny_b: tuple[Path, int],  # noqa: F811
) -> None:
    from fmlang.cli.main import cli

    spec = deployed(tmp_path, tiny_model, tiny_b, "512MiB")
    out = tmp_path / "build"
    result = CliRunner().invoke(cli, ["build", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.output
    server = json.loads((out / "deploy/helper/server.json").read_text())
    assert server["adapters"] == {"helper": "run/models/helper/adapter"}
    base = server["base"]
    assert base["name"] is None and "at run time" in base["resolved"]
    assert base["candidates"] == {
        "helper+tiny_b": {"name": "tiny_b", "weights": {
            "kind": "local", "location": "weights/tiny_b", "revision": None}},
        "helper+tiny_causal_lm": {"name": "tiny_causal_lm", "weights": {
            "kind": "local", "location": "weights/tiny_causal_lm", "revision": None}},
    }  # fmt: skip
    gpu = spec.read_text().replace(
        "  local { port = 8123 }", "  local { port = 8123 }\n  kserve { hardware = h100 }"
    )
    spec.write_text(
        gpu.replace("import std.hardware.cpu_2core", "import std.hardware.{cpu_2core, h100}")
    )
    refused = CliRunner().invoke(cli, ["build", str(spec), "-o", str(out), "--format", "json"])
    assert refused.exit_code == 1, refused.output
    assert "FM0393" in refused.output and "chosen only when `fmc run`" in refused.output


@pytest.fixture(scope="module")
def selected(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    tiny_b: tuple[Path, int],  # noqa: F811
) -> tuple[Path, Path, str]:
    """A run of the deployed selection model: (spec, build folder, the winning base)."""
    root = tmp_path_factory.mktemp("selected")
    spec = deployed(root, tiny_model, tiny_b, "512MiB")
    build = root / "build"
    run_spec(spec, build, until="train")
    chosen = json.loads((build / "run/models/helper/metrics.json").read_text())["selection"]
    return spec, build, str(chosen["chosen"])


FOLDERS = {"tiny_b": "tiny-b", "tiny_causal_lm": "tiny-causal-lm"}


def test_serve_loads_the_selected_base_and_adapter(selected: tuple[Path, Path, str]) -> None:
    import httpx
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fmlang.backends.serve.server import serve_in_background
    from fmlang.backends.serve_config import serve_plan

    spec, build, winner = selected
    plan = serve_plan(build, "helper")
    (chosen,) = plan.versions
    assert chosen.version.name == f"helper+{winner}"
    assert chosen.reason == "the candidate `fmc run` selected for `helper`"
    folder = (spec.parent / FOLDERS[winner]).resolve()
    assert Path(plan.config.base_model).resolve() == folder
    assert plan.config.model_name == winner
    assert plan.config.adapters == {"helper": str(chosen.version.path)}
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    merged = PeftModel.from_pretrained(base, str(chosen.version.path)).merge_and_unload().eval()
    prompt = [5, 17, 42, 99, 7]
    with torch.no_grad():
        out = merged.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                              pad_token_id=0, eos_token_id=None)  # fmt: skip
    expected = out[0, len(prompt) :].tolist()
    server = serve_in_background(plan.config)
    try:
        for _ in range(300):
            if httpx.get(f"{server.url}/ready").status_code == 200:
                break
            time.sleep(0.1)
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert {m["id"]: m["root"] for m in models}["helper"] == winner
        body = {"model": "helper", "prompt": prompt, "max_tokens": 6, "temperature": 0}
        answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        (choice,) = answer.json()["choices"]
    finally:
        server.stop()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert choice["text"] == tokenizer.decode(expected) and len(expected) == 6


def test_serve_config_reads_the_selected_base_from_the_build_folder(
    selected: tuple[Path, Path, str],
) -> None:
    """`fmc serve --config` (what the containers run): the winner's `local(...)` weights
    from DIR/weights/<base>, missing ones named; `--version` may name another candidate,
    which is then served on its own base."""
    from fmlang.backends.serve_config import serve_plan_file
    from fmlang.errors import StageError

    spec, build, winner = selected
    config = build / "deploy/helper/server.json"
    with pytest.raises(StageError) as missing:
        serve_plan_file(config)
    assert [d.code for d in missing.value.diagnostics] == ["FM1006"]
    assert f"weights/{winner}" in (missing.value.diagnostics[0].help or "")
    for base, folder in FOLDERS.items():
        shutil.copytree(spec.parent / folder, build / "weights" / base, dirs_exist_ok=True)
    plan = serve_plan_file(config)
    assert Path(plan.config.base_model) == build / "weights" / winner
    assert plan.config.adapters == {"helper": str(plan.versions[0].version.path)}
    other = next(b for b in FOLDERS if b != winner)
    named = serve_plan_file(config, version=f"helper+{other}@1")
    assert Path(named.config.base_model) == build / "weights" / other
    assert named.versions[0].version.name == f"helper+{other}"
    assert named.config.model_name == other


def test_fmc_serve_says_it_serves_the_selected_candidate(
    selected: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fmlang.backends.serve import server
    from fmlang.cli.main import cli

    spec, build, winner = selected
    started: list[object] = []
    monkeypatch.setattr(server, "run", lambda config, gate=None: started.append(config))
    result = CliRunner().invoke(cli, ["serve", str(spec), "-o", str(build), "--no-auth"])
    assert result.exit_code == 0, result.output
    assert f"serving helper+{winner}@1" in result.output
    assert "the candidate `fmc run` selected for `helper`" in result.output
    assert started[0].model_name == winner  # type: ignore[attr-defined]

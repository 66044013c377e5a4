"""Shipping from the registry: gate results per version, what `fmc serve` serves (the newest
passing version, `--version`, `--allow-failed-gates`, superseded versions), `fmc tag` and
`fmc rollback`, `fmc diff` showing what changed (settings side by side, data, gates,
per-layer weight deltas, torch-free), and merges registered with both parents by a real
`fmc run`, served from the registry by the real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from fmlang.backends.registry import BaseModelRef, Lineage, Registry, Version, open_registry
from fmlang.backends.release import choose, rollback, tag
from fmlang.cli.registry import diff_command, log_command, rollback_command, tag_command
from fmlang.errors import StageError

ROOT = Path(__file__).resolve().parent.parent


def lora(folder: Path, seed: int, rank: int = 4, alpha: float = 8) -> Path:
    """A LoRA adapter as peft saves it (two modules), written without torch."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for module in ("q_proj", "v_proj"):
        key = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, 16)).astype(np.float32)
        tensors[f"{key}.lora_B.weight"] = rng.standard_normal((16, rank)).astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha,
              "target_modules": ["q_proj", "v_proj"]}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def gate(measured: float, bound: float, op: str = "<=", line: int = 40) -> dict[str, Any]:
    passed = measured <= bound if op == "<=" else measured >= bound
    return {"line": line, "metric": "perplexity", "op": op, "bound": bound,
            "measured": measured, "passed": passed, "why": ""}  # fmt: skip


def lineage(name: str = "helper", **changes: Any) -> Lineage:
    base = Lineage(
        name=name,
        spec_hash="sha256:spec",
        data_hashes={"data:tickets": "sha256:data1"},
        base_model=BaseModelRef("tiny_causal_lm", "local:tiny-causal-lm", "r1"),
        settings={"peft_type": "LORA", "r": 4, "lora_alpha": 8},
        inputs_hash="inputs-1",
        training={"num_train_epochs": 4.0, "learning_rate": 0.0003, "seed": 3},
        data_rows={"train": 28, "tickets.test": 12},
    )
    return Lineage(**{**base.__dict__, **changes})


def add(registry: Registry, tmp: Path, seed: int, gates: list[dict[str, Any]],
        name: str = "helper", **changes: Any) -> Version:  # fmt: skip
    version = registry.register(lora(tmp / f"{name}-{seed}", seed), lineage(name, **changes))
    return registry.attach_gates(version, gates)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return open_registry(tmp_path / "build", create=True)


@pytest.fixture
def fmc() -> click.Group:
    group = click.Group("fmc")
    for command in (log_command, diff_command, tag_command, rollback_command):
        group.add_command(command)
    return group


def codes(caught: pytest.ExceptionInfo[StageError]) -> list[str]:
    return [d.code for d in caught.value.diagnostics]


# ---- gate results per version -----------------------------------------------------------


def test_gates_are_recorded_per_version_and_log_shows_them(
    tmp_path: Path, registry: Registry, fmc: click.Group
) -> None:
    good = add(registry, tmp_path, 1, [gate(3.2, 100.0)])
    bad = add(registry, tmp_path, 2, [gate(14.2, 1.5), gate(3.0, 100.0, line=41)])
    unmeasured = add(registry, tmp_path, 3, [{**gate(1.0, 2.0), "passed": None}])
    again = registry.resolve(bad.hash).lineage
    assert (again.gates_passed, len(again.gates)) == (False, 2)
    assert again.gates[0]["measured"] == 14.2 and again.gates[0]["bound"] == 1.5
    assert registry.resolve(good.hash).lineage.gates_passed is True
    assert registry.resolve(unmeasured.hash).lineage.gates_passed is None
    listed = json.loads(CliRunner().invoke(fmc, ["log", str(tmp_path / "build"), "--format",
                                                 "json"]).output)["versions"]  # fmt: skip
    assert [v["lineage"]["gates_passed"] for v in listed] == [True, False, None]
    assert [v["serving"] for v in listed] == [False, False, True]  # newest that did not fail
    rich = CliRunner(env={"COLUMNS": "220"}).invoke(fmc, ["log", str(tmp_path / "build")])
    assert rich.exit_code == 0, rich.output
    assert "1 passed" in rich.output and "FAILED perplexity 14.2 <= 1.5 (line 40)" in rich.output
    assert "not measured" in rich.output and "serving" in rich.output


# ---- what serving picks -------------------------------------------------------------------


def test_serving_takes_the_newest_passing_version(tmp_path: Path, registry: Registry) -> None:
    from fmlang.backends.serve.config import ServeConfig
    from fmlang.backends.serve_config import choose_versions

    passing = add(registry, tmp_path, 1, [gate(3.2, 100.0)])
    failing = add(registry, tmp_path, 2, [gate(14.2, 1.5)])
    chosen = choose(registry, "helper")
    assert chosen.version == passing and [v for v, _ in chosen.skipped] == [failing]
    assert "passed over helper@2 (gates failed: perplexity 14.2 <= 1.5" in chosen.describe()
    config = ServeConfig(base_model="base", adapters={"helper": "run/models/helper/adapter"})
    served, versions = choose_versions(tmp_path / "build", config)
    assert served.adapters == {"helper": str(passing.path)}  # the registry's copy of helper@1
    assert (passing.path / "adapter_config.json").is_file()
    assert [c.version.ref for c in versions] == ["helper@1"]
    with pytest.raises(StageError) as caught:
        choose_versions(tmp_path / "build", ServeConfig(base_model="b", adapters={"nope": "x"}))
    assert codes(caught) == ["FM1080"]  # nothing registered under that name


def test_a_named_failing_version_needs_allow_failed_gates(
    tmp_path: Path, registry: Registry
) -> None:
    add(registry, tmp_path, 1, [gate(3.2, 100.0)])
    failing = add(registry, tmp_path, 2, [gate(14.2, 1.5)])
    other = add(registry, tmp_path, 3, [], name="writer")
    with pytest.raises(StageError) as caught:
        choose(registry, "helper", failing.hash[:8])
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "FM1081" and "helper@2" in diagnostic.message
    assert diagnostic.notes == ("measured perplexity 14.2 <= 1.5 (line 40): failed",)
    assert diagnostic.help and "--allow-failed-gates" in diagnostic.help
    allowed = choose(registry, "helper", "helper@2", allow_failed=True)
    assert allowed.version == failing and allowed.allowed_failure
    with pytest.raises(StageError) as caught:
        choose(registry, "helper", other.ref)
    assert codes(caught) == ["FM1083"]


def test_when_every_version_failed_nothing_is_served_unless_allowed(
    tmp_path: Path, registry: Registry
) -> None:
    first = add(registry, tmp_path, 1, [gate(9.0, 1.5)])
    second = add(registry, tmp_path, 2, [gate(14.2, 1.5)])
    with pytest.raises(StageError) as caught:
        choose(registry, "helper")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "FM1080" and len(diagnostic.notes) == 2
    assert "14.2 <= 1.5" in diagnostic.notes[0] and "--allow-failed-gates" in str(diagnostic.help)
    allowed = choose(registry, "helper", allow_failed=True)
    assert allowed.version == second and allowed.allowed_failure
    assert [v for v, _ in allowed.skipped] == [first]


def test_a_superseded_version_is_skipped_and_never_served(
    tmp_path: Path, registry: Registry
) -> None:
    older = add(registry, tmp_path, 1, [gate(3.2, 100.0)])
    newer = add(registry, tmp_path, 2, [gate(3.0, 100.0)])
    registry.mark_superseded(newer, "trained on rows forget request f1 removed")
    assert choose(registry, "helper").version == older
    for allow in (False, True):
        with pytest.raises(StageError) as caught:
            choose(registry, "helper", newer.ref, allow_failed=allow)
        assert codes(caught) == ["FM1082"]


# ---- tags and rollback --------------------------------------------------------------------


def test_rollback_moves_the_current_pointer_and_serve_honours_it(
    tmp_path: Path, registry: Registry, fmc: click.Group
) -> None:
    v1 = add(registry, tmp_path, 1, [gate(3.2, 100.0)])
    v2 = add(registry, tmp_path, 2, [gate(14.2, 1.5)])  # failed: never rolled back to
    v3 = add(registry, tmp_path, 3, [gate(3.0, 100.0)])
    v4 = add(registry, tmp_path, 4, [gate(2.9, 100.0)])
    assert choose(registry, "helper").version == v4
    assert rollback(registry, "helper") == (v4, v3)
    assert choose(registry, "helper").version == v3
    assert registry.pointers("current") == {"helper": v3.hash}
    assert rollback(registry, "helper") == (v3, v1)  # v2 failed its gate: passed over
    with pytest.raises(StageError) as caught:
        rollback(registry, "helper")
    assert codes(caught) == ["FM0854"]
    with pytest.raises(StageError) as caught:
        rollback(registry, "helper", v2.ref)
    assert codes(caught) == ["FM0856"]
    add(registry, tmp_path, 5, [gate(2.8, 100.0)])  # a new run does not move the pointer
    assert choose(registry, "helper").version == v1
    build = str(tmp_path / "build")
    result = CliRunner().invoke(fmc, ["rollback", build, "helper", "--to", v4.short])
    assert result.exit_code == 0, result.output
    assert "helper@1" in result.output and "→ helper@4" in result.output
    assert choose(registry, "helper").version == v4
    cleared = CliRunner().invoke(fmc, ["rollback", build, "helper", "--clear"])
    assert cleared.exit_code == 0 and "serves helper@5" in cleared.output
    other = CliRunner().invoke(fmc, ["rollback", build, "writer"])
    assert other.exit_code == 1 and "FM0849" in other.output


def test_tags_name_versions_and_survive_new_registrations(
    tmp_path: Path, registry: Registry, fmc: click.Group
) -> None:
    v1 = add(registry, tmp_path, 1, [gate(3.2, 100.0)])
    build = str(tmp_path / "build")
    result = CliRunner().invoke(fmc, ["tag", build, "helper@1", "prod", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"tag": "prod", "hash": v1.hash, "ref": "helper@1"}
    v2 = add(registry, tmp_path, 2, [gate(3.0, 100.0)])  # rewrites the index
    assert registry.resolve("prod") == v1 and choose(registry, "helper", "prod").version == v1
    tag(registry, v2.short, "prod")  # moves
    assert registry.resolve("prod") == v2
    for bad in ("beef", "helper", "two words", "@1", "9lives"):
        with pytest.raises(StageError) as caught:
            tag(registry, "helper@1", bad)
        assert codes(caught) == ["FM0853"], bad
    listed = json.loads(CliRunner().invoke(fmc, ["log", build, "--format", "json"]).output)
    assert [v["tags"] for v in listed["versions"]] == [[], ["prod"]]


# ---- fmc diff -------------------------------------------------------------------------------


def two_versions(tmp_path: Path) -> tuple[Path, Version, Version]:
    build = tmp_path / "build"
    registry = open_registry(build, create=True)
    a = registry.register(lora(tmp_path / "a", 1), lineage())
    changed = lineage(
        settings={"peft_type": "LORA", "r": 8, "lora_alpha": 16},
        training={"num_train_epochs": 15.0, "learning_rate": 0.001, "seed": 3},
        data_hashes={"data:tickets": "sha256:data2"},
        data_rows={"train": 31, "tickets.test": 12},
        base_model=BaseModelRef("tiny_causal_lm", "local:tiny-causal-lm", "r2"),
    )
    b = registry.register(lora(tmp_path / "b", 2, rank=8, alpha=16), changed)
    registry.attach_metrics(a, {"perplexity@tickets.test": 14.0})
    registry.attach_metrics(b, {"perplexity@tickets.test": 12.5})
    registry.attach_gates(a, [gate(14.0, 13.0)])
    registry.attach_gates(b, [gate(12.5, 13.0)])
    return build, a, b


def dense_update(folder: Path, module: str) -> Any:
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    key = f"base_model.model.{module}"
    a = tensors[f"{key}.lora_A.weight"].astype(np.float64)
    b = tensors[f"{key}.lora_B.weight"].astype(np.float64)
    return b @ a * (config["lora_alpha"] / config["r"])


def test_diff_shows_what_changed_side_by_side(tmp_path: Path, fmc: click.Group) -> None:
    build, a, b = two_versions(tmp_path)
    rich = CliRunner(env={"COLUMNS": "200"}).invoke(fmc, ["diff", str(build), a.ref, b.ref])
    assert rich.exit_code == 0, rich.output
    for line in (r"epochs\s+4 → 15", r"lr\s+0\.0003 → 0\.001", r"rank\s+4 → 8",
                 r"alpha\s+8 → 16", r"base revision\s+r1 → r2"):  # fmt: skip
        assert re.search(line, rich.output), (line, rich.output)
    assert "data:tickets" in rich.output and "changed" in rich.output and "+3 rows" in rich.output
    assert "-1.5" in rich.output and "FAIL" in rich.output and "pass" in rich.output
    assert "self_attn.q_proj" in rich.output
    document = json.loads(
        CliRunner().invoke(fmc, ["diff", str(build), a.ref, b.ref, "--format", "json"]).output
    )
    labels = {row["label"]: (row["a"], row["b"]) for row in document["settings"]}
    assert labels["epochs"] == (4.0, 15.0) and labels["lr"] == (0.0003, 0.001)
    assert [r["label"] for r in document["settings"]][:3] == ["base revision", "rank", "alpha"]
    assert document["data"]["rows"][1] == {"split": "train", "a": 28, "b": 31, "delta": 3}
    (gates,) = document["gates"]
    assert (gates["a"]["passed"], gates["b"]["passed"]) == (False, True)
    (metric,) = document["metrics"]
    assert metric["delta"] == pytest.approx(-1.5)
    rows = {row["name"]: row for row in document["weights"]}
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"):
        da, db = dense_update(a.path, module), dense_update(b.path, module)
        assert rows[module]["norm_a"] == pytest.approx(np.linalg.norm(da), rel=1e-9)
        assert rows[module]["norm_b"] == pytest.approx(np.linalg.norm(db), rel=1e-9)
        assert rows[module]["diff"] == pytest.approx(np.linalg.norm(da - db), rel=1e-9)
        largest = max(np.linalg.norm(da), np.linalg.norm(db))
        assert rows[module]["relative"] == pytest.approx(np.linalg.norm(da - db) / largest)


def test_diff_of_an_adapter_with_itself_is_zero_and_sparse_diffs_compare(
    tmp_path: Path,
) -> None:
    from fmlang.backends.weight_diff import weight_deltas

    one = lora(tmp_path / "one", 1)
    (row, _) = weight_deltas(one, one)
    assert row["diff"] == pytest.approx(0.0, abs=1e-9) and row["relative"] == pytest.approx(0.0)
    sparse = {}
    for name, indices, values in (
        ("a", [0, 2, 5], [1.0, -2.0, 3.0]),
        ("b", [2, 5, 7], [1.0, 3.0, 4.0]),
    ):
        folder = tmp_path / name
        folder.mkdir()
        tensors = {
            "w.indices": np.array(indices, np.int32),
            "w.values": np.array(values, np.float32),
        }
        save_file(
            tensors, str(folder / "sparse_diff.safetensors"), metadata={"shapes": '{"w": [3, 3]}'}
        )
        (folder / "adapter_config.json").write_text('{"peft_type": "FISHER_MASK"}')
        dense = np.zeros(9)
        dense[indices] = values
        sparse[name] = dense
    (row,) = weight_deltas(tmp_path / "a", tmp_path / "b")
    assert row["kind"] == "sparse"
    assert row["diff"] == pytest.approx(np.linalg.norm(sparse["a"] - sparse["b"]))
    assert row["norm_a"] == pytest.approx(np.linalg.norm(sparse["a"]))


def test_log_and_diff_do_not_import_torch(tmp_path: Path) -> None:
    build, *_ = two_versions(tmp_path)
    commands = [["log", str(build)], ["diff", str(build), "helper@1", "helper@2"]]
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fmlang.cli.main import cli\n"
        f"for args in {commands!r}:\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "    assert 'q_proj' in result.output or args[0] == 'log'\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- a real run: merges registered, the failing one not served --------------------------

SPEC = """\
import std.models.tiny_causal_lm

dataset tickets {
  source jsonl("tickets.jsonl")
  schema {
    id: string @id
    question: text
    answer: text
  }
  split { train 70%, test 30% by hash(id) }
  grant read, train, deploy to "team:ml"
}

model helper {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer, max_steps = 2,
          lr = 1e-3, batch = 4, seed = 3 }
  eval { on = [tickets.test], metrics = [perplexity] }
}

model helper_b {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer, max_steps = 2,
          lr = 1e-3, batch = 4, seed = 5 }
}

merge both {
  models  [helper, helper_b]
  method  ties(density = 0.5)
  weights [0.6, 0.4]
  eval { on = [tickets.test], metrics = [perplexity] }
}

constraints helper {
  perplexity <= 100000 on tickets.test
}

constraints both {
  perplexity <= 1.5 on tickets.test
}

deploy helper {
  local { host = "127.0.0.1", port = 18081 }
  grant query to "service:web"
}

deploy both {
  local { host = "127.0.0.1", port = 18082 }
  grant query to "service:web"
}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    from fmlang.api import build as build_artifacts
    from fmlang.api import check_paths
    from tests.data_helpers import run_spec

    root = tmp_path_factory.mktemp("ship")
    (root / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [{"id": str(i), "question": f"how do I reset my password {i}?",
             "answer": "open settings, then reset password."} for i in range(24)]  # fmt: skip
    (root / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = root / "ship.fm"
    spec.write_text(SPEC, encoding="utf-8")
    build = root / "build"
    build_artifacts(check_paths([spec], verify=True), build)
    run_spec(spec, build, until="merge", principal="team:ml")
    (build / "weights").mkdir()  # where `fmc serve --config` reads `local(...)` weights
    (build / "weights" / "tiny_causal_lm").symlink_to(tiny_model)
    return build


def test_a_run_registers_the_merge_with_both_parents(trained: Path, fmc: click.Group) -> None:
    registry = open_registry(trained)
    (helper,), (helper_b,) = registry.versions("helper"), registry.versions("helper_b")
    (both,) = registry.versions("both")
    assert both.lineage.kind == "merge" and both.lineage.parents == (helper.hash, helper_b.hash)
    assert both.lineage.settings["method"] == "ties" and both.lineage.settings["weights"]
    assert both.lineage.metrics["perplexity@tickets.test"] > 1
    assert both.lineage.gates_passed is False and both.lineage.gates[0]["bound"] == 1.5
    assert helper.lineage.gates_passed is True
    assert helper.lineage.training["max_steps"] == 2 and helper.lineage.data_rows["train"] > 0
    metrics = json.loads((trained / "run/merges/both/metrics.json").read_text())
    assert metrics["registry"] == {"hash": both.hash, "number": 1}
    result = CliRunner(env={"COLUMNS": "220"}).invoke(fmc, ["log", str(trained)])
    assert result.exit_code == 0 and "helper@1, helper_b@1" in result.output
    diff = CliRunner().invoke(fmc, ["diff", str(trained), "helper@1", "both@1", "--format",
                                    "json"])  # fmt: skip
    assert diff.exit_code == 0, diff.output  # was FM0849: merges were never registered
    keys = {row["key"] for row in json.loads(diff.output)["settings"]}
    assert {"kind", "parents", "settings.method"} <= keys


def test_serve_refuses_the_failing_merge_and_serves_the_passing_model(trained: Path) -> None:
    import httpx

    from fmlang.backends.serve.server import serve_in_background
    from fmlang.backends.serve_config import serve_plan

    with pytest.raises(StageError) as caught:
        serve_plan(trained, "both")
    assert codes(caught) == ["FM1080"] and "1.5" in caught.value.diagnostics[0].notes[0]
    allowed = serve_plan(trained, "both", allow_failed_gates=True)
    (chosen,) = allowed.versions
    assert chosen.version.ref == "both@1" and chosen.allowed_failure
    plan = serve_plan(trained, "helper")
    (chosen,) = plan.versions
    assert chosen.version.ref == "helper@1" and chosen.reason == "the newest passing version"
    assert plan.config.adapters == {
        "helper": str(trained / "registry/objects" / chosen.version.hash)
    }
    server = serve_in_background(plan.config)
    try:
        import time

        for _ in range(300):
            if httpx.get(f"{server.url}/ready").status_code == 200:
                break
            time.sleep(0.1)
        body = {"model": "helper", "prompt": "how do I reset", "max_tokens": 4}
        answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()


def test_fmc_serve_names_the_version_and_refuses_a_failing_one(trained: Path) -> None:
    from fmlang.cli.main import cli

    config = str(trained / "deploy" / "both" / "server.json")
    result = CliRunner().invoke(cli, ["serve", "--config", config, "--no-auth"])
    assert result.exit_code == 1 and "error[FM1080]" in result.output, result.output
    assert "--allow-failed-gates" in result.output and "Traceback" not in result.output
    named = CliRunner().invoke(cli, ["serve", "--config", config, "--no-auth", "--version",
                                     "both@1"])  # fmt: skip
    assert named.exit_code == 1 and "error[FM1081]" in named.output
    assert "measured perplexity" in named.output and "<= 1.5" in named.output
    other = CliRunner().invoke(cli, ["serve", "--config", config, "--version", "helper@1"])
    assert other.exit_code == 1 and "error[FM1083]" in other.output


def test_fmc_serve_says_which_version_it_serves(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fmlang.backends.serve import server
    from fmlang.cli.main import cli

    started: list[Any] = []
    monkeypatch.setattr(server, "run", lambda config, gate=None: started.append(config))
    config = str(trained / "deploy" / "helper" / "server.json")
    result = CliRunner().invoke(cli, ["serve", "--config", config, "--no-auth"])
    assert result.exit_code == 0, result.output
    (helper,) = open_registry(trained).versions("helper")
    assert f"serving helper@1 ({helper.short}, the newest passing version); gates: 1 passed" in (
        result.output
    )
    assert started[0].adapters == {"helper": str(helper.path)}
    both = str(trained / "deploy" / "both" / "server.json")
    allowed = CliRunner().invoke(cli, ["serve", "--config", both, "--no-auth",
                                       "--allow-failed-gates"])  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert "serving both@1" in allowed.output and "FAILED perplexity" in allowed.output
    assert "warning: both@1 failed its runtime gates" in allowed.output

"""Model selection: `base auto in [...]` with `select by METRIC on SPLIT`.

Two tiny random Llamas are candidates beside a stdlib model that cannot fit the memory
bound: `fmc check` names the dropped one with its numbers, `fmc run` trains exactly the two
survivors (smallest first, with early stopping on the selection split), picks the one with
the lowest perplexity on `tickets.valid`, records every candidate's metrics, lays the winner
out under the selection model's name for the stages after it, and a rerun is cached. The
negative tests cover each diagnostic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmlang.api import check_paths, check_text, compile_spec
from tests.data_helpers import run_spec

TINY_B = """\
base_model tiny_b {
  family         "llama"
  kind           decoder
  mlp            gated
  params         PARAMS
  layers         1
  hidden         64
  heads          4
  kv_heads       2
  intermediate   128
  vocab          1000
  max_seq        256
  dtype          fp32
  license        "apache-2.0"
  license_allows [research, commercial]
  modules        [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head]
  weights        local("tiny-b")
}
"""

SPEC = """\
import std.models.{tiny_causal_lm, qwen2_5_1_5b}
import std.hardware.cpu_2core
import "tiny_b.fm"

dataset tickets {
  source jsonl("tickets.jsonl")
  schema {
    id: string @id
    question: text
    answer: text
  }
  split { train 60%, valid 20%, test 20% by hash(id) }
  grant read, train, deploy to "team:ml"
}

model helper {
  base    auto in [tiny_causal_lm, qwen2_5_1_5b, tiny_b]
  select  by perplexity on tickets.valid
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
  eval { on = [tickets.valid, tickets.test], metrics = [perplexity] }
}

constraints helper {
  memory <= BOUND on cpu_2core
  perplexity <= 100000 on tickets.test
}
"""


@pytest.fixture(scope="module")
def tiny_b(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A second tiny random Llama (one layer, seed 1) with the stdlib tiny's tokenizer, and
    its parameter count."""
    import torch
    from transformers import LlamaForCausalLM

    from fmlang.backends.train.tiny import tiny_config, tiny_tokenizer

    folder = tmp_path_factory.mktemp("weights") / "tiny-b"
    config = tiny_config()
    config.num_hidden_layers = 1
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(1)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder, int(model.num_parameters())


def project(tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int], bound: str) -> Path:
    (tmp_path / "tiny-causal-lm").symlink_to(tiny_model)
    (tmp_path / "tiny-b").symlink_to(tiny_b[0])
    (tmp_path / "tiny_b.fm").write_text(TINY_B.replace("PARAMS", str(tiny_b[1])))
    rows = [
        {"id": str(i), "question": f"how do I reset my password {i}?",
         "answer": "open settings, choose security, then reset password."}
        for i in range(40)
    ]  # fmt: skip
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = tmp_path / "helper.fm"
    spec.write_text(SPEC.replace("BOUND", bound), encoding="utf-8")
    return spec


def test_check_drops_the_candidate_that_cannot_fit_and_says_why(
    tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int]
) -> None:
    result = check_paths([project(tmp_path, tiny_model, tiny_b, "512MiB")], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    (note,) = [d for d in result.diagnostics if d.code == "FM0376"]
    assert note.severity.value == "note"
    assert "candidate `qwen2_5_1_5b` dropped: memory" in note.message
    line = SPEC.splitlines().index("  memory <= BOUND on cpu_2core") + 1
    assert f"> 512 MiB on cpu_2core (line {line})" in note.message
    spec = compile_spec(result)
    helper = spec.model("helper")
    assert helper is not None and helper.selection is not None
    assert helper.selection.candidates == ("tiny_causal_lm", "tiny_b")
    assert helper.selection.dropped == ("qwen2_5_1_5b",)
    assert helper.selection.lower_is_better
    assert [m.name for m in spec.models] == ["helper+tiny_causal_lm", "helper+tiny_b", "helper"]
    assert result.report is not None
    (selection,) = result.report.to_json()["selections"]
    assert [c["base"] for c in selection["candidates"]] == ["tiny_b", "tiny_causal_lm"]
    assert selection["dropped"][0]["misses"][0]["constraint"] == "memory@cpu_2core"


def test_a_candidate_whose_license_the_constraints_refuse_is_dropped(
    tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int]
) -> None:
    spec = project(tmp_path, tiny_model, tiny_b, "512MiB")
    spec.write_text(
        spec.read_text().replace("  perplexity <=", "  license allows commercial\n  perplexity <=")
    )
    (tmp_path / "tiny_b.fm").write_text(
        (tmp_path / "tiny_b.fm").read_text().replace("[research, commercial]", "[research]")
    )
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    dropped = sorted(d.message for d in result.diagnostics if d.code == "FM0376")
    assert "candidate `tiny_b` dropped: the license must allow commercial use" in dropped[1]
    helper = compile_spec(result).model("helper")
    assert helper is not None and helper.selection is not None
    assert helper.selection.candidates == ("tiny_causal_lm",)


def test_plan_lists_the_kept_and_the_dropped(
    tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int]
) -> None:
    from click.testing import CliRunner

    from fmlang.cli.main import cli

    spec = project(tmp_path, tiny_model, tiny_b, "512MiB")
    result = CliRunner().invoke(cli, ["plan", str(spec)], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = [
        line
        for line in result.output.splitlines()
        if line.startswith("│") and ("trained as" in line or "dropped" in line)
    ]
    assert [line.split()[1] for line in lines] == ["tiny_b", "tiny_causal_lm", "qwen2_5_1_5b"]
    assert "dropped: memory 3.29 GiB > 512 MiB on cpu_2core" in lines[2]


def test_no_candidate_left_is_one_error_with_every_reason(
    tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int]
) -> None:
    result = check_paths([project(tmp_path, tiny_model, tiny_b, "1KiB")], verify=True)
    (error,) = [d for d in result.diagnostics if d.code == "FM0377"]
    assert "no base candidate of model `helper`" in error.message
    assert [n.split("`")[1] for n in error.notes] == ["tiny_causal_lm", "qwen2_5_1_5b", "tiny_b"]
    assert all("> 1 KiB on cpu_2core" in n for n in error.notes)
    assert not result.ok


def test_run_trains_the_survivors_picks_the_best_and_caches(
    tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int]
) -> None:
    from fmlang.backends.registry import open_registry
    from fmlang.backends.train.job import TrainJob
    from fmlang.backends.train.loader import weights_folder

    spec = project(tmp_path, tiny_model, tiny_b, "512MiB")
    build = tmp_path / "build"
    report = run_spec(spec, build, until="train")
    # exactly the survivors, smallest first, then the pick
    assert [o.stage for o in report.outcomes] == [
        "data:tickets", "train:helper+tiny_b", "train:helper+tiny_causal_lm", "train:helper",
    ]  # fmt: skip
    models = build / "run/models"
    assert not (models / "helper+qwen2_5_1_5b").exists()
    measured = {
        base: json.loads((models / f"helper+{base}/metrics.json").read_text())
        for base in ("tiny_b", "tiny_causal_lm")
    }
    for metrics in measured.values():
        stop = metrics["train"]["early_stopping"]
        assert stop["split"] == "tickets.valid" and len(stop["checks"]) == 3
    valid = {b: m["eval"]["tickets.valid"]["perplexity"] for b, m in measured.items()}
    best = min(valid, key=lambda b: valid[b])
    chosen = json.loads((models / "helper/metrics.json").read_text())
    selection = chosen["selection"]
    assert selection["chosen"] == best and selection["lowest_wins"]
    assert {c["base"]: c["value"] for c in selection["candidates"]} == valid
    assert selection["dropped"] == ["qwen2_5_1_5b"]
    # every candidate's metrics, on every split, are recorded
    for c in selection["candidates"]:
        assert set(c["metrics"]) == {"tickets.valid", "tickets.test"}
    # the winner is what the stages after it see: its test metrics, gates, adapter and job
    test = measured[best]["eval"]["tickets.test"]["perplexity"]
    assert chosen["eval"]["tickets.test"]["perplexity"] == test
    (gate,) = chosen["gates"]
    assert gate["measured"] == pytest.approx(test) and gate["passed"] is True
    adapter = models / "helper/adapter/adapter_model.safetensors"
    assert (
        adapter.read_bytes()
        == (models / f"helper+{best}/adapter/adapter_model.safetensors").read_bytes()
    )
    job = TrainJob.read(models / "helper/job.json")
    served = weights_folder(job)
    assert (
        Path(served).resolve()
        == (tmp_path / ("tiny-b" if best == "tiny_b" else "tiny-causal-lm")).resolve()
    )
    # the registry holds every candidate and points at the chosen one
    registry = open_registry(build)
    assert sorted(v.name for v in registry.versions()) == ["helper+tiny_b", "helper+tiny_causal_lm"]
    assert registry.pointers("selected")["helper"] == selection["registry"]["hash"]
    assert registry.resolve(selection["registry"]["hash"]).name == f"helper+{best}"
    assert report.to_json()["stages"][-1]["selection"]["chosen"] == best  # run/report.json
    _rebase_is_refused(spec, build)
    again = run_spec(spec, build, until="train")
    assert [o.skipped for o in again.outcomes] == [True, True, True, True]


def _rebase_is_refused(spec: Path, build: Path) -> None:
    """`fmc rebase` names the candidates instead: the selection model has no base of its own."""
    from click.testing import CliRunner

    from fmlang.cli.main import cli

    args = ["rebase", str(spec), "helper", "--onto", "tiny_causal_lm", "-o", str(build)]
    result = CliRunner().invoke(cli, [*args, "--as", "team:ml", "--format", "json"])
    assert result.exit_code == 1
    (refused,) = [d for d in json.loads(result.stdout)["diagnostics"] if d["code"] == "FM0891"]
    assert "`helper+tiny_causal_lm`, `helper+tiny_b`" in refused["help"]


def test_the_evaluation_of_the_laid_out_winner_reproduces_its_metrics(
    tmp_path: Path, tiny_model: Path, tiny_b: tuple[Path, int]
) -> None:
    """What serves or evaluates `helper` downstream (its job and adapter) is the winner."""
    from fmlang.backends.train.evaluate import evaluate
    from fmlang.backends.train.job import TrainJob

    spec = project(tmp_path, tiny_model, tiny_b, "512MiB")
    build = tmp_path / "build"
    run_spec(spec, build, until="train")
    models = build / "run/models"
    chosen = json.loads((models / "helper/metrics.json").read_text())
    job = TrainJob.read(models / "helper/job.json")
    again = evaluate(job, models / "helper/adapter", "tickets.test")
    assert again["perplexity"] == pytest.approx(chosen["eval"]["tickets.test"]["perplexity"])


def test_pick_prefers_the_best_value_then_the_smaller_model() -> None:
    from fmlang.backends.select_stage import pick

    scored = [
        {"base": "big", "params": 10, "value": 0.9},
        {"base": "small", "params": 5, "value": 0.9},
        {"base": "worse", "params": 1, "value": 0.8},
        {"base": "unmeasured", "params": 1, "value": None},
    ]
    assert pick(scored, lowest_wins=False)["base"] == "small"
    assert pick(scored, lowest_wins=True)["base"] == "worse"
    assert pick([{"base": "x", "params": 1, "value": None}], lowest_wins=True) is None


# ---- the diagnostics --------------------------------------------------------------------

HEAD = """\
import std.models.{tiny_causal_lm, minilm_l6}
dataset t {
  source jsonl("t.jsonl")
  schema { id: string @id, question: text, answer: text }
  split { train 60%, valid 20%, test 20% by hash(id) }
}
"""
MODEL = """\
model a {
  BASE
  SELECT
  task generate
  adapter lora(rank = 4, targets = [TARGETS])
  train { data = t.train, prompt = question, completion = answer }
  eval { on = [t.valid] }
}
"""


def codes(body: str, extra: str = "", **parts: str) -> list[tuple[str, str]]:
    model = MODEL
    for key, value in {"BASE": "base auto in [tiny_causal_lm]",
                       "SELECT": "select by perplexity on t.valid", "TARGETS": "q_proj",
                       **parts}.items():  # fmt: skip
        model = model.replace(key, value)
    result = check_text(HEAD + (body or model) + extra, "spec.fm")
    return [(d.code, d.message) for d in result.diagnostics if d.code.startswith("FM037")]


@pytest.mark.parametrize(
    ("parts", "code", "says"),
    [
        ({"SELECT": ""}, "FM0373", "has base candidates but no `select by`"),
        ({"BASE": "base auto"}, "FM0373", "without a list of candidates"),
        ({"BASE": "base auto in [tiny_causal_lm, tiny_causal_lm]"}, "FM0373", "listed twice"),
        ({"BASE": "base tiny_causal_lm"}, "FM0374", "selects by `perplexity` but has one base"),
        ({"BASE": "base auto in [tiny_causal_lm, minilm_l6]"}, "FM0375",
         "candidate `minilm_l6` is an encoder and cannot `generate`"),
        ({"TARGETS": "q_proj, gate_proj", "BASE": "base auto in [tiny_causal_lm, minilm_l6]",
          "SELECT": "select by perplexity on t.valid"}, "FM0375", "encoder"),
        ({"SELECT": "select by accuracy on t.valid"}, "FM0378", "`accuracy` is not a metric"),
        ({"SELECT": "select by perplexity on t.test"}, "FM0378",
         "compares on `t.test`, which the model does not evaluate"),
        ({"SELECT": "select by perplexity"}, "FM0378", "names no split"),
        ({"  train { data = t.train, prompt = question, completion = answer }\n": ""}, "FM0378",
         "selects its base but trains nothing"),
    ],
)  # fmt: skip
def test_selection_diagnostics(parts: dict[str, str], code: str, says: str) -> None:
    found = codes("", **parts)
    assert any(c == code and says in m for c, m in found), found


def test_a_candidate_without_the_adapter_targets_is_refused_by_name() -> None:
    spec = TINY_B.replace("PARAMS", "1").replace(
        "modules        [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head]",
        "modules        [k_proj, v_proj]",
    )
    found = codes("", spec, BASE="base auto in [tiny_causal_lm, tiny_b]")
    assert found == [
        ("FM0375", "candidate `tiny_b` has no module `q_proj` for the adapter to wrap")
    ]


def test_a_selection_model_is_deployed_but_not_merged() -> None:
    """A deployment serves the winner (tests/test_selection_deploy.py); a merge needs one
    base before training, so it is refused on each parent that selects."""
    extra = (
        "merge g { models [a, a], method linear }\n"
        'deploy a { local { port = 8000 }\n grant query to "x" }\n'
    )
    found = [m for c, m in codes("", extra) if c == "FM0379"]
    assert found == [
        "cannot merge `a` into `g`: its base is chosen only when `fmc run` trains its candidates",
        "cannot merge `a` into `g`: its base is chosen only when `fmc run` trains its candidates",
    ]


def test_select_by_is_a_model_statement_and_formats_back() -> None:
    from fmlang.fmt import format_text

    text = HEAD + MODEL.replace("BASE", "base auto in [tiny_causal_lm]").replace(
        "SELECT", "select   by  perplexity   on t.valid"
    ).replace("TARGETS", "q_proj")
    formatted = format_text(text).text
    assert formatted is not None and "  select by perplexity on t.valid\n" in formatted
    assert format_text(formatted).text == formatted
    merge = HEAD + "merge g {\n  select by accuracy on t.valid\n}\n"
    assert ("FM0301", "unknown setting `select` in merge `g`") in [
        (d.code, d.message) for d in check_text(merge, "spec.fm").diagnostics
    ]


def test_early_stopping_ends_training_after_patience_checks_without_improvement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The callback's decision, with the loss measurement replaced by a fixed sequence."""
    from types import SimpleNamespace

    from fmlang.backends.train import early_stopping
    from fmlang.backends.train.job import EarlyStopping

    losses = iter([3.0, 2.0, 2.5, 2.1, 2.2, 1.0])
    monkeypatch.setattr(early_stopping, "_rows", lambda job, tok, split: [{"x": 1}] * 5)
    monkeypatch.setattr(early_stopping, "mean_loss", lambda model, rows, collate: next(losses))
    job = SimpleNamespace(early_stopping=EarlyStopping(split="d.valid", patience=3, checks=10))
    stopper = early_stopping.callback(job, SimpleNamespace(pad_token_id=0))  # type: ignore[arg-type]
    control = SimpleNamespace(should_training_stop=False)
    for step in range(1, 101):
        state = SimpleNamespace(global_step=step, max_steps=100)
        stopper.on_step_end(None, state, control, model=None)
        if control.should_training_stop:
            break
    report = stopper.report()
    assert [c["step"] for c in report["checks"]] == [10, 20, 30, 40, 50]
    assert report["best_loss"] == 2.0 and report["stopped_at"] == 50

"""Selecting among adapter kinds: `adapter auto in [lora(...), fisher_mask(...)]`.

Each adapter is a candidate model `m+<kind>` on the model's base (`fmlang.ir.selection`),
checked as the model's adapter would be, dropped with a named reason when it cannot meet the
static constraints (here: a deployment, whose servers load no fisher_mask diff), trained by
`fmc run` and picked by the `select by` metric. With `base auto in [...]` as well, every base
is paired with every adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.api import check_paths, check_text, compile_spec
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
  }
  split { train 60%, valid 20%, test 20% by hash(id) }
  grant read, train, deploy to "team:ml"
}

model helper {
  base    tiny_causal_lm
  adapter auto in [
    lora(rank = 4, alpha = 8, targets = [q_proj, v_proj]),
    fisher_mask(density = 1%, samples = 8),
  ]
  select  by perplexity on tickets.valid
  task    generate
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
  memory <= 512MiB on cpu_2core
}
"""

DEPLOY = """
deploy helper {
  local { port = 8124 }
  grant query to "team:ml"
}
"""


def project(tmp_path: Path, tiny_model: Path, extra: str = "") -> Path:
    (tmp_path / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [
        {"id": str(i), "question": f"how do I reset my password {i}?",
         "answer": "open settings, choose security, then reset password."}
        for i in range(40)
    ]  # fmt: skip
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = tmp_path / "helper.fm"
    spec.write_text(SPEC + extra, encoding="utf-8")
    return spec


def test_each_adapter_is_a_candidate_on_the_model_base(tmp_path: Path, tiny_model: Path) -> None:
    result = check_paths([project(tmp_path, tiny_model)], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    spec = compile_spec(result)
    helper = spec.model("helper")
    assert helper is not None and helper.selection is not None and helper.base is None
    assert helper.selection.candidates == ("lora", "fisher_mask")
    candidates = {m.name: m for m in spec.models if m.candidate_of == "helper"}
    assert sorted(candidates) == ["helper+fisher_mask", "helper+lora"]
    lora, fisher = candidates["helper+lora"], candidates["helper+fisher_mask"]
    assert lora.base == fisher.base == "tiny_causal_lm"
    assert lora.adapter is not None and lora.adapter.kind == "lora"
    assert lora.adapter.targets == ("q_proj", "v_proj")
    assert fisher.adapter is not None and fisher.adapter.density == pytest.approx(0.01)


def test_a_deployment_drops_the_adapter_no_server_loads(tmp_path: Path, tiny_model: Path) -> None:
    from fmlang.cli.main import cli

    spec = project(tmp_path, tiny_model, DEPLOY)
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    (note,) = [d for d in result.diagnostics if d.code == "FM0376"]
    assert "candidate `fisher_mask` dropped: deploy `helper` cannot serve it" in note.message
    helper = compile_spec(result).model("helper")
    assert helper is not None and helper.selection is not None
    assert helper.selection.candidates == ("lora",)
    assert helper.selection.dropped == ("fisher_mask",)
    plan = CliRunner().invoke(cli, ["plan", str(spec)], terminal_width=250)
    assert plan.exit_code == 0, plan.output
    rows = [line.split("│")[1:4] for line in plan.output.splitlines()
            if line.startswith("│") and ("trained as" in line or "dropped" in line)]  # fmt: skip
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["lora", "tiny_causal_lm", "lora"],
        ["fisher_mask", "tiny_causal_lm", "fisher_mask"],
    ]


def test_a_tiny_run_trains_both_and_picks_by_the_metric(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model)
    build = tmp_path / "build"
    report = run_spec(spec, build, until="train")
    stages = [o.stage for o in report.outcomes]
    assert stages == ["data:tickets", "train:helper+fisher_mask", "train:helper+lora",
                      "train:helper"]  # fmt: skip
    models = build / "run/models"
    valid = {
        kind: json.loads((models / f"helper+{kind}/metrics.json").read_text())["eval"][
            "tickets.valid"
        ]["perplexity"]
        for kind in ("lora", "fisher_mask")
    }
    assert valid["lora"] != valid["fisher_mask"]
    selection = json.loads((models / "helper/metrics.json").read_text())["selection"]
    assert selection["chosen"] == min(valid, key=lambda k: valid[k])
    assert {c["candidate"]: c["value"] for c in selection["candidates"]} == valid
    assert {c["candidate"]: c["adapter"] for c in selection["candidates"]} == {
        "lora": "lora", "fisher_mask": "fisher_mask"}  # fmt: skip


HEAD = """\
import std.models.{tiny_causal_lm, minilm_l6}
dataset t {
  source jsonl("t.jsonl")
  schema { id: string @id, question: text, answer: text }
  split { train 60%, valid 20%, test 20% by hash(id) }
}
model a {
  base BASE
  ADAPTER
  select by perplexity on t.valid
  task generate
  train { data = t.train, prompt = question, completion = answer }
  eval { on = [t.valid] }
}
"""


def diagnostics(base: str, adapter: str) -> list[tuple[str, str]]:
    text = HEAD.replace("BASE", base).replace("ADAPTER", adapter)
    return [(d.code, d.message) for d in check_text(text, "spec.fm").diagnostics
            if d.severity.value == "error"]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "adapter", "code", "says"),
    [
        ("tiny_causal_lm", "adapter auto", "FM0373", "adapter `auto` without a list"),
        ("tiny_causal_lm", "adapter auto in [lora(rank = 4), lora(rank = 4)]", "FM0373",
         "adapter candidate is listed twice"),
        ("tiny_causal_lm", "adapter auto in [lora(rank = 4), fisher_mask()]", "FM0355",
         "has no `density`"),
        ("tiny_causal_lm", "adapter auto in [lora(targets = [nope]), ia3]", "FM0331",
         "has no module `nope`"),
        ("tiny_causal_lm", "adapter auto in [lora(rank = 4), bogus(rank = 4)]", "FM0307",
         "unknown `adapter` kind `bogus`"),
        ("auto in [tiny_causal_lm, minilm_l6]", "adapter auto in [lora(rank = 4), ia3]",
         "FM0375", "candidate `minilm_l6` is an encoder"),
    ],
)  # fmt: skip
def test_adapter_candidate_diagnostics(base: str, adapter: str, code: str, says: str) -> None:
    found = diagnostics(base, adapter)
    assert any(c == code and says in m for c, m in found), found


def test_a_list_of_adapters_is_valid_and_pairs_with_every_base() -> None:
    from fmlang.api import check_text as check
    from fmlang.ir.build import build_spec

    text = HEAD.replace("BASE", "auto in [tiny_causal_lm]").replace(
        "ADAPTER", "adapter auto in [lora(rank = 4, targets = [q_proj]), lora(rank = 8), ia3]"
    )
    result = check(text, "spec.fm")
    assert result.ok, [d.message for d in result.diagnostics]
    spec = build_spec(result.program)
    helper = spec.model("a")
    assert helper is not None and helper.selection is not None
    assert helper.selection.candidates == (
        "tiny_causal_lm+lora_1", "tiny_causal_lm+lora_2", "tiny_causal_lm+ia3",
    )  # fmt: skip
    ranks = [m.adapter.rank.fixed for m in spec.models
             if m.candidate_of == "a" and m.adapter and m.adapter.rank]  # fmt: skip
    assert ranks == [4, 8]

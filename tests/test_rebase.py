"""A changed base checkpoint reruns exactly the stages trained on it (and says why), and
`fmc rebase` warm-starts an adapter on a new base, refuses one of another shape, and records
the lineage. Tiny random Llamas saved as local checkpoints; in-process and fast."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from fmlang.errors import StageError
from tests.data_helpers import TESTER, run_spec

SPEC = """\
import std.models.tiny_causal_lm

base_model other_lm {
  family         "llama"
  kind           decoder
  mlp            gated
  params         202_048
  layers         2
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
  weights        local("other-lm")
}

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

model a {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer,
          max_steps = 2, lr = 1e-3, batch = 4, seed = 3 }
  eval { on = [tickets.test], metrics = [perplexity] }
}

model a2 {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer,
          max_steps = 1, lr = 1e-3, batch = 4, seed = 5 }
}

model b {
  base    other_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer,
          max_steps = 1, lr = 1e-3, batch = 4, seed = 7 }
}

merge both {
  models  [a, a2]
  method  linear
  weights [0.5, 0.5]
}
"""


def checkpoint(folder: Path, seed: int, **changes: Any) -> Path:
    """Overwrite the weights (and config) of the tiny Llama in `folder`, keeping its
    tokenizer: a new checkpoint of the same architecture, or with `changes` another one."""
    import torch
    from transformers import LlamaForCausalLM

    from fmlang.backends.train.tiny import tiny_config

    config = tiny_config()
    for name, value in changes.items():
        setattr(config, name, value)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    finally:
        torch.random.set_rng_state(state)
    return folder


def project(tmp_path: Path, tiny_model: Path) -> Path:
    import json

    for name in ("tiny-causal-lm", "other-lm"):
        shutil.copytree(tiny_model, tmp_path / name)
    rows = [{"id": str(i), "question": f"how do I reset my password {i}?",
             "answer": "open settings, choose security, then reset password."}
            for i in range(24)]  # fmt: skip
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = tmp_path / "project.fm"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def ran(report: Any) -> list[str]:
    return [o.stage for o in report.outcomes if not o.skipped]


def test_a_new_base_checkpoint_reruns_exactly_the_stages_trained_on_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = project(tmp_path, tiny_model)
    build = tmp_path / "build"
    first = run_spec(spec, build, until="merge")
    assert ran(first) == ["data:tickets", "train:a", "train:a2", "train:b", "merge:both"]
    assert ran(run_spec(spec, build, until="merge")) == []

    checkpoint(tmp_path / "tiny-causal-lm", seed=1)  # same architecture, new weights
    again = run_spec(spec, build, until="merge")
    assert ran(again) == ["train:a", "train:a2", "merge:both"]
    reason = again.reasons["train:a"]
    assert reason.startswith("base model `tiny_causal_lm` changed: weights sha256 ")
    assert " → " in reason and "stage `data:tickets`" not in reason
    assert "stage `train:a` changed" in again.reasons["merge:both"]
    stages = {s["stage"]: s for s in again.to_json()["stages"]}
    assert stages["train:a"]["reason"] == reason and "reason" not in stages["train:b"]

    checkpoint(tmp_path / "other-lm", seed=2)
    assert ran(run_spec(spec, build, until="merge")) == ["train:b"]


def test_the_registry_tells_the_two_checkpoints_apart(tmp_path: Path, tiny_model: Path) -> None:
    from fmlang.backends.registry import open_registry

    spec = project(tmp_path, tiny_model)
    spec.write_text(SPEC.split("model a2")[0], encoding="utf-8")
    build = tmp_path / "build"
    run_spec(spec, build, until="train")
    checkpoint(tmp_path / "tiny-causal-lm", seed=1)
    run_spec(spec, build, until="train")
    first, second = open_registry(build).versions("a")
    revisions = [v.lineage.base_model.revision for v in (first, second) if v.lineage.base_model]
    assert len(set(revisions)) == 2 and all(r.startswith("sha256:") for r in revisions)


def context(spec: Path, build: Path) -> Any:
    from fmlang.backends.run import RunOptions
    from fmlang.backends.run import context as run_context
    from tests.data_helpers import compile_file

    options = RunOptions(build, spec, "train", TESTER, log=lambda _: None)
    return run_context(compile_file(spec), options, spec.read_text(encoding="utf-8"))


def capture_initial_adapter() -> Any:
    """A TrainerCallback that keeps the adapter's tensors as training begins."""
    from peft import get_peft_model_state_dict
    from transformers import TrainerCallback

    class Initial(TrainerCallback):
        def __init__(self) -> None:
            self.weights: dict[str, Any] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            state_dict = get_peft_model_state_dict(kwargs["model"])
            self.weights = {k: v.detach().clone() for k, v in state_dict.items()}

    return Initial()


def test_rebase_warm_starts_on_the_new_base_and_records_the_lineage(
    tmp_path: Path, tiny_model: Path
) -> None:
    import torch
    from peft.utils import load_peft_weights

    from fmlang.backends.rebase import rebase

    spec = project(tmp_path, tiny_model)
    spec.write_text(SPEC.split("model a2")[0], encoding="utf-8")
    build = tmp_path / "build"
    run_spec(spec, build, until="train")
    shutil.copytree(tmp_path / "tiny-causal-lm", tmp_path / "tiny-v2")
    checkpoint(tmp_path / "tiny-v2", seed=1)

    callback = capture_initial_adapter()
    ctx = context(spec, build)
    done = rebase(ctx, "a", "local:tiny-v2", cwd=tmp_path, callbacks=(callback,))

    old = load_peft_weights(str(build / "run/models/a/adapter"), device="cpu")
    assert callback.weights.keys() == old.keys()
    assert all(torch.equal(callback.weights[k], old[k]) for k in old)  # the warm start
    assert any(k.endswith("lora_B.weight") and old[k].abs().sum() > 0 for k in old)
    new = load_peft_weights(str(build / "run/rebased/a/adapter"), device="cpu")
    assert any(not torch.equal(new[k], old[k]) for k in old)  # and it trained from there

    lineage = done.version.lineage
    assert done.version.ref == "a@2" and lineage.rebased_from == done.previous.hash
    assert lineage.previous_base is not None and lineage.previous_base.name == "tiny_causal_lm"
    assert lineage.base_model is not None and lineage.base_model.source == "local:tiny-v2"
    assert lineage.metrics["perplexity@tickets.test"] > 1
    assert done.steps == 2 and done.original["steps"] == 2

    again = rebase(context(spec, build), "a", "local:tiny-v2", cwd=tmp_path)
    assert again.skipped and again.version.hash == done.version.hash


def test_rebase_refuses_a_base_of_another_shape(tmp_path: Path, tiny_model: Path) -> None:
    from fmlang.backends.rebase import rebase

    spec = project(tmp_path, tiny_model)
    spec.write_text(SPEC.split("model a2")[0], encoding="utf-8")
    build = tmp_path / "build"
    run_spec(spec, build, until="train")
    shutil.copytree(tmp_path / "tiny-causal-lm", tmp_path / "wider")
    checkpoint(tmp_path / "wider", seed=1, hidden_size=128, num_hidden_layers=3)
    with pytest.raises(StageError) as caught:
        rebase(context(spec, build), "a", "local:wider", cwd=tmp_path)
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "FM0881"
    notes = "\n".join(diagnostic.notes)
    assert (
        "`model.layers.0.self_attn.q_proj.lora_A.weight`: [4, 64] in the adapter, [4, 128]" in notes
    )
    assert "layers.2.self_attn.q_proj.lora_A.weight` [4, 128]: on the new base" in notes
    assert not (build / "run/rebased/a/adapter").exists()


def test_rebase_names_what_it_cannot_start_from(tmp_path: Path, tiny_model: Path) -> None:
    from fmlang.backends.rebase import rebase

    spec = project(tmp_path, tiny_model)
    spec.write_text(SPEC.split("model a2")[0], encoding="utf-8")
    build = tmp_path / "build"
    run_spec(spec, build, until="data")
    with pytest.raises(StageError) as untrained:
        rebase(context(spec, build), "a", "other_lm", cwd=tmp_path)
    assert untrained.value.diagnostics[0].code == "FM0880"
    with pytest.raises(StageError) as unknown:
        rebase(context(spec, build), "aa", "other_lm", cwd=tmp_path)
    assert "did you mean `a`" in unknown.value.diagnostics[0].message
    run_spec(spec, build, until="train")
    for onto in ("othr_lm", "local:nowhere"):
        with pytest.raises(StageError) as bad:
            rebase(context(spec, build), "a", onto, cwd=tmp_path)
        assert bad.value.diagnostics[0].code == "FM0882"

    private = SPEC.split("model a2")[0].replace("seed = 3 }", "seed = 3\n dp { epsilon = 8 } }")
    spec.write_text(private, encoding="utf-8")
    run_spec(spec, build, until="data")
    with pytest.raises(StageError) as dp:
        rebase(context(spec, build), "a", "other_lm", cwd=tmp_path)
    assert dp.value.diagnostics[0].code == "FM0883"

    sparse = "adapter fisher_mask(density = 0.5%, samples = 8)"
    text = SPEC.split("model a2")[0].replace(
        "adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])", sparse, 1
    )
    spec.write_text(text, encoding="utf-8")
    run_spec(spec, build, until="data")
    with pytest.raises(StageError) as fisher:
        rebase(context(spec, build), "a", "other_lm", cwd=tmp_path)
    assert fisher.value.diagnostics[0].code == "FM0884"

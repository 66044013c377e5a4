"""`adapter fisher_mask(...)` (FishMask sparse updates): checking, lowering, the cost model,
Fisher selection, the stored diff, sparse merges, and a run on the tiny causal LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fmlang.api import check_text, compile_spec
from fmlang.backends.train.fisher import (
    SparseDiff,
    SparseEntry,
    apply_diff,
    fisher_information,
    load_diff,
    merge_diffs,
    save_diff,
    top_k_mask,
)
from fmlang.errors import StageError
from fmlang.lower.launch import model_files
from tests.data_helpers import run_spec
from tests.test_run_train import SPEC as TINY_SPEC

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples/youtube_spam/spam.fm"
GOLDEN = Path(__file__).resolve().parent / "golden_lower/fisher_mask/spam_filter"
LORA = (
    "adapter lora(rank = auto in [4, 8, 16], alpha = 16, dropout = 0.1, targets = [query, value])"
)


def youtube(adapter: str, deploy: bool = False) -> str:
    """The YouTube example with `adapter` in place of its LoRA adapter."""
    text = EXAMPLE.read_text(encoding="utf-8").replace(LORA, adapter)
    return text if deploy else text[: text.index("deploy spam_filter {")]


def codes(text: str) -> list[str]:
    result = check_text(text, file=str(EXAMPLE), base=EXAMPLE.parent, verify=True)
    return [d.code for d in result.diagnostics if d.severity.name == "ERROR"]


# ---- check ---------------------------------------------------------------------------


def test_a_fisher_mask_model_checks() -> None:
    assert codes(youtube("adapter fisher_mask(density = 0.5%, samples = 64)")) == []


@pytest.mark.parametrize(
    ("adapter", "code"),
    [
        ("adapter fisher_mask(samples = 64)", "FM0355"),
        ("adapter fisher_mask", "FM0355"),
        ("adapter fisher_mask(density = 0%)", "FM0304"),
        ("adapter fisher_mask(density = 120%)", "FM0304"),
        ("adapter fisher_mask(density = 0.000001%)", "FM0356"),
        ("adapter fisher_mask(density = 1%, rank = 4)", "FM0308"),
        ("adapter fisher_mask(density = 1%)\n  quantize nf4", "FM0359"),
    ],
)
def test_bad_fisher_mask_settings_are_refused(adapter: str, code: str) -> None:
    assert code in codes(youtube(adapter))


@pytest.mark.parametrize(
    ("setting", "refused"),
    [
        ("optimizer = sgd", True),
        ("optimizer = adamw", False),
        ("checkpointing = full", True),
        ("checkpointing = off", False),
        ("precision = bf16", True),
        ("dp { epsilon = 8, delta = 1e-5 }", True),
        ("checkpoint_every = 50", True),
    ],
)
def test_training_settings_the_loop_lacks_are_refused(setting: str, refused: bool) -> None:
    text = youtube("adapter fisher_mask(density = 1%)").replace(
        "seed   = 7", f"seed = 7\n    {setting}"
    )
    assert ("FM0359" in codes(text)) is refused


def test_a_deployed_fisher_mask_model_is_refused() -> None:
    assert "FM0357" in codes(youtube("adapter fisher_mask(density = 1%)", deploy=True))


# ---- lower and cost model ------------------------------------------------------------


def _lowered(adapter: str) -> tuple[dict[str, str], object]:
    text = youtube(adapter)
    result = check_text(text, file=str(EXAMPLE), base=EXAMPLE.parent, verify=True)
    assert result.ok and result.report is not None, result.diagnostics
    spec = compile_spec(result)
    model = spec.model("spam_filter")
    assert model is not None
    files = model_files(spec, model, result.report.knobs)
    return {Path(k).name: v for k, v in files.items()}, result.report


def test_lowered_files_match_golden(update_golden: bool) -> None:
    produced, _ = _lowered("adapter fisher_mask(density = 0.5%, samples = 64)")
    config = json.loads(produced["adapter_config.json"])
    assert config["peft_type"] == "FISHER_MASK"
    assert config["density"] == 0.005 and config["num_samples"] == 64
    assert config["modules_to_save"] == ["classifier"]
    if update_golden:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for stale in GOLDEN.iterdir():
            stale.unlink()
        for name, text in produced.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted(GOLDEN.iterdir())}
    assert produced == expected


def test_the_cost_model_prices_the_mask_and_the_full_gradients() -> None:
    from fmlang.verify.costmodel import Arch, adapter_params
    from fmlang.verify.training import TrainSetup, breakdown

    arch = Arch(params=22_713_216, layers=6, hidden=384, heads=12, kv_heads=12, head_dim=32,
                intermediate=1536, vocab=30522, max_seq=512, dtype="fp32", decoder=False,
                family="bert", tied=True, gated=False)  # fmt: skip
    assert adapter_params(arch, "fisher_mask", 0, (), density=0.005) == round(0.005 * 22_713_216)
    common = {"task": "classify", "batch": 16, "seq": 128, "precision": "fp32",
              "weights_dtype": "fp32", "gpu": False}  # fmt: skip
    sparse = breakdown(arch, TrainSetup(adapter="fisher_mask", density=0.005, **common))
    lora = breakdown(arch, TrainSetup(adapter="lora", rank=4, targets=("query",), **common))
    k = round(0.005 * arch.params)
    assert sparse.terms["optimizer"] == k * 8.0  # AdamW: two fp32 moments per trained entry
    assert sparse.terms["gradients"] > k * 4.0  # plus a masked tensor's full gradient
    assert sparse.terms["activations"] > lora.terms["activations"]  # every weight's input
    assert "fisher" in sparse.phases and sparse.phases["fisher"] > 4 * arch.params


# ---- Fisher selection, the diff, merges ----------------------------------------------


def _tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def test_fisher_selection_picks_exactly_k_and_only_those_change() -> None:
    from fmlang.backends.train.fisher import with_deltas

    model = _tiny_classifier()
    inputs, labels = torch.randn(12, 6), torch.randint(0, 3, (12,))
    params = dict(model.named_parameters())

    def loss_of(i: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(inputs[i : i + 1]), labels[i : i + 1])

    fisher = fisher_information(params, range(12), loss_of)
    expected = sum(
        torch.autograd.grad(loss_of(i), params["0.weight"])[0].square() for i in range(12)
    )
    assert torch.allclose(fisher["0.weight"], expected)
    mask = top_k_mask(fisher, 7)
    assert sum(m.numel() for m in mask.values()) == 7
    threshold = min(float(fisher[n].reshape(-1)[m].min()) for n, m in mask.items())
    unselected = [fisher[n].reshape(-1)[[i for i in range(fisher[n].numel())
                                          if n not in mask or i not in mask[n].tolist()]]
                  for n in fisher]  # fmt: skip
    assert all(float(u.max()) <= threshold for u in unselected if u.numel())
    before = {n: p.detach().clone() for n, p in params.items()}
    deltas = {n: torch.zeros(m.numel(), requires_grad=True) for n, m in mask.items()}
    optimizer = torch.optim.AdamW(deltas.values(), lr=0.1, weight_decay=0.0)
    for p in params.values():
        p.requires_grad_(False)
    for _ in range(5):
        live = {n: with_deltas(params[n], mask[n], deltas[n]) for n in mask}
        logits = torch.func.functional_call(model, live, (inputs,))
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    diff = SparseDiff({n: SparseEntry(mask[n], deltas[n].detach()) for n in mask}, {},
                      {n: tuple(p.shape) for n, p in params.items()})  # fmt: skip
    apply_diff(model, diff)
    for name, p in model.named_parameters():
        changed = (p.detach() != before[name]).reshape(-1).nonzero().reshape(-1)
        allowed = set(mask[name].tolist()) if name in mask else set()
        assert set(changed.tolist()) <= allowed
    assert sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters()) == 7


def test_the_stored_diff_reloads_to_the_same_weights(tmp_path: Path) -> None:
    trained = _tiny_classifier()
    diff = SparseDiff(
        {"0.weight": SparseEntry(torch.tensor([0, 7, 29]), torch.tensor([0.5, -1.0, 2.0]))},
        {"2.bias": torch.tensor([1.0, 2.0, 3.0])},
        {"0.weight": (5, 6), "2.bias": (3,)},
    )
    apply_diff(trained, diff)
    save_diff(tmp_path, diff)
    reloaded = apply_diff(_tiny_classifier(), load_diff(tmp_path))
    for (name, a), (_, b) in zip(
        trained.named_parameters(), reloaded.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    base, now = _tiny_classifier()[0].weight.detach(), reloaded[0].weight.detach()
    moved = (now - base).reshape(-1)
    assert moved[[0, 7, 29]].tolist() == pytest.approx([0.5, -1.0, 2.0])
    assert int((moved != 0).sum()) == 3
    wrong = SparseDiff({"0.weight": diff.sparse["0.weight"]}, {}, {"0.weight": (6, 5)})
    with pytest.raises(StageError) as caught:
        apply_diff(_tiny_classifier(), wrong)
    assert caught.value.diagnostics[0].code == "FM0870"


def _diff(indices: list[int], values: list[float]) -> SparseDiff:
    entry = SparseEntry(torch.tensor(indices), torch.tensor(values))
    return SparseDiff({"w": entry}, {}, {"w": (10,)})


def test_non_overlapping_sparse_diffs_add_exactly() -> None:
    merged = merge_diffs([_diff([0, 3], [0.25, -1.5]), _diff([5, 9], [2.0, 0.125])])
    entry = merged.sparse["w"]
    assert entry.indices.tolist() == [0, 3, 5, 9]
    assert entry.values.tolist() == [0.25, -1.5, 2.0, 0.125]


def test_overlapping_sparse_diffs_resolve_like_ties() -> None:
    a = _diff([1, 2, 4], [1.0, -3.0, 0.5])
    b = _diff([1, 2, 6], [3.0, 1.0, -2.0])
    c = _diff([2], [1.0])
    merged = merge_diffs([a, b, c]).sparse["w"]
    got = dict(zip(merged.indices.tolist(), merged.values.tolist(), strict=True))
    # 1: both positive -> mean 2.0; 2: -3 against 1 + 1: negative mass 3 > 2 -> -3 alone;
    # 4 and 6: one diff each -> exact.
    assert got == {1: 2.0, 2: -3.0, 4: 0.5, 6: -2.0}
    weighted = merge_diffs([a, b], [2.0, 1.0]).sparse["w"]
    assert dict(zip(weighted.indices.tolist(), weighted.values.tolist(), strict=True))[2] == -6.0


# ---- a run ---------------------------------------------------------------------------


def tiny_project(tmp_path: Path, tiny_model: Path, method: str = "ties") -> Path:
    """The tiny-LM spec of test_run_train with two fisher_mask models and their merge."""
    (tmp_path / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [{"id": str(i), "question": f"how do I reset my password {i}?",
             "answer": "open settings, choose security, then reset password.",
             "product": ["app", "web"][i % 2]} for i in range(40)]  # fmt: skip
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    adapter = "adapter fisher_mask(density = 1%, samples = 8)"
    text = TINY_SPEC.replace("BOUND", "100000")
    text = text.replace("adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])", adapter)
    model = text[text.index("model helper {") : text.index("constraints helper")]
    text += model.replace("model helper", "model other").replace("seed       = 3", "seed = 5")
    text += f"""
merge both {{
  models [helper, other]
  method {method}
  eval {{ on = [tickets.test], metrics = [perplexity] }}
  grant deploy to "team:ml"
}}
"""
    spec = tmp_path / "helper.fm"
    spec.write_text(text, encoding="utf-8")
    return spec


def test_fisher_mask_models_merge_by_ties_only(tmp_path: Path, tiny_model: Path) -> None:
    spec = tiny_project(tmp_path, tiny_model, "ties(density = 0.5)")
    result = check_text(spec.read_text(), file=str(spec), base=tmp_path, verify=True)
    assert [d.code for d in result.diagnostics if d.severity.name == "ERROR"] == ["FM0358"]


def test_a_fisher_mask_run_trains_only_the_mask_and_merges(
    tmp_path: Path, tiny_model: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from fmlang.backends.merge import weight_deltas
    from fmlang.backends.registry import open_registry

    build = tmp_path / "build"
    report = run_spec(tiny_project(tmp_path, tiny_model), build, until="merge")
    assert [o.stage for o in report.outcomes] == [
        "data:tickets", "train:helper", "train:other", "merge:both"
    ]  # fmt: skip
    folder = build / "run/models/helper/adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    total = sum(p.numel() for p in base.parameters())
    assert config["base_params"] == total and config["selected"] == round(0.01 * total)
    diff = load_diff(folder)
    assert diff.changed == config["selected"] and not diff.full
    assert any(float(e.values.abs().max()) > 0 for e in diff.sparse.values())
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    apply_diff(base, diff)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in base.named_parameters())
    assert 0 < changed <= config["selected"]
    metrics = json.loads((build / "run/models/helper/metrics.json").read_text())
    assert metrics["eval"]["tickets.test"]["perplexity"] > 1
    (version,) = open_registry(build).versions("helper")  # registered, its files hashed
    assert version.lineage.metrics
    other = build / "run/models/other/adapter"
    merged = load_diff(build / "run/merges/both/adapter")
    expected = merge_diffs([diff, load_diff(other)])
    assert sorted(merged.sparse) == sorted(expected.sparse)
    for name, entry in merged.sparse.items():
        assert torch.equal(entry.indices, expected.sparse[name].indices)
        assert torch.equal(entry.values, expected.sparse[name].values)
    merge_metrics = json.loads((build / "run/merges/both/metrics.json").read_text())
    assert merge_metrics["eval"]["tickets.test"]["perplexity"] > 1
    rows = weight_deltas(folder, other)  # `fmc diff`'s per-layer comparison
    assert rows and all(r.kind == "sparse" for r in rows)
    assert any(r.diff for r in rows)


def test_a_fisher_mask_model_is_not_warm_started(tmp_path: Path) -> None:
    from fmlang.backends.train.job import BaseWeights, Columns, TrainJob
    from fmlang.backends.train.trainer import train

    job = TrainJob(
        model="sparse",
        task="generate",
        base=BaseWeights(kind="local", location=str(tmp_path)),
        adapter_config={"peft_type": "FISHER_MASK", "density": 0.01, "num_samples": 8},
        train_data=str(tmp_path / "train.parquet"),
        columns=Columns(prompt="q", completion="a"),
        output_dir=str(tmp_path / "out"),
        warm_start=str(tmp_path / "old"),
    )
    with pytest.raises(StageError) as caught:
        train(job, progress=False)
    assert caught.value.diagnostics[0].code == "FM0872"

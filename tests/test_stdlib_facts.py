"""The stdlib's facts are complete and consistent: every GPU profile has what the cost model
reads (never a default), and every decoder's parameter count follows from its shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.ir.nodes import PretrainedModel, Spec

REQUIRED = ("memory", "bandwidth", "peak_fp32", "peak_bf16", "host_memory", "link_bandwidth")


@pytest.fixture(scope="module")
def std() -> Spec:
    text = "import std.models\nimport std.hardware\n"
    return compile_spec(check_text(text, "std.fm", Path.cwd()))


def test_every_gpu_profile_is_complete(std: Spec) -> None:
    gpus = [hw for hw in std.hardware if hw.kind == "gpu"]
    assert len(gpus) >= 13
    for hw in gpus:
        missing = [fact for fact in REQUIRED if getattr(hw, fact) is None]
        assert not missing, (hw.name, missing)
        assert 15 * 2**30 < hw.memory.value < 200e9  # type: ignore[union-attr]


def recomputed(base: PretrainedModel) -> int:
    """Embeddings + layers x (attention, MLP x experts (+ router), two norms) + final norm +
    an untied head; biases are not counted (Qwen2's q/k/v biases are < 0.1%)."""
    h, layers = base.hidden or 0, base.layers or 0
    heads, kv = base.heads or 1, base.kv_heads or base.heads or 1
    head_dim = base.head_dim or h // heads
    experts = base.experts or 1
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = (3 if base.mlp != "plain" else 2) * h * (base.intermediate or 0) * experts
    router = h * experts if experts > 1 else 0
    embeddings = (base.vocab or 0) * h
    head = 0 if base.tie_embeddings else embeddings
    return embeddings + layers * (attention + mlp + router + 2 * h) + h + head


def test_decoder_parameter_counts_follow_from_the_shape(std: Spec) -> None:
    decoders = [b for b in std.base_models if b.kind == "decoder" and b.family != "phi3"]
    assert len(decoders) >= 12
    for base in decoders:
        assert base.params is not None
        assert abs(recomputed(base) - base.params) / base.params < 0.01, base.name


def test_every_decoder_can_adapt_its_output_head(std: Spec) -> None:
    for base in std.base_models:
        if base.kind == "decoder" and base.name != "tiny_causal_lm":
            assert "lm_head" in base.modules, base.name

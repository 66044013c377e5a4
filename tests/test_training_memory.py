"""Training memory per device: each knob moves the terms it should and no other, devices
are never pooled, the solver's verdict equals the plain arithmetic, and every change the
advice suggests really fits when written into the spec."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmlang.api import check_text, compile_spec
from fmlang.ir.nodes import Spec
from fmlang.verify import costmodel as cm
from fmlang.verify.training import DTYPE_BYTES, TrainSetup, breakdown

GIB = 2.0**30
QV = ("q_proj", "v_proj")


@pytest.fixture(scope="module")
def std() -> Spec:
    return compile_spec(
        check_text("import std.models\nimport std.hardware\n", "std.fm", Path.cwd())
    )


@pytest.fixture(scope="module")
def llama(std: Spec) -> cm.Arch:
    base = std.base_model("llama3_2_3b")
    assert base is not None
    return cm.Arch.of(base)


LORA = TrainSetup(rank=16, targets=QV, batch=4, seq=1024, master_weights="fp32")
FULL = TrainSetup(adapter="full", batch=4, seq=1024, master_weights="none")


def terms(arch: cm.Arch, setup: TrainSetup) -> dict[str, float]:
    return breakdown(arch, setup).terms


def changed(arch: cm.Arch, setup: TrainSetup, **change: object) -> set[str]:
    before, after = terms(arch, setup), terms(arch, replace(setup, **change))  # type: ignore[arg-type]
    return {k for k in before if abs(before[k] - after[k]) > 1e-6 * max(before[k], 1)}


# ---- each knob moves its terms ------------------------------------------------------


def test_checkpointing_moves_only_activations(llama: cm.Arch) -> None:
    assert changed(llama, LORA, checkpointing="full") == {"activations", "allocator"}
    order = [terms(llama, replace(LORA, checkpointing=c))["activations"]
             for c in ("off", "selective", "full", "offload")]  # fmt: skip
    assert order == sorted(order, reverse=True)
    full = terms(llama, replace(LORA, checkpointing="full"))["activations"]
    # one 16-bit hidden state per block and token, plus one block recomputed
    assert full > llama.layers * 4 * 1024 * llama.hidden * 2


def test_optimizer_state_sizes(llama: cm.Arch) -> None:
    n = cm.adapter_params(llama, "full", 0, ())
    assert terms(llama, replace(FULL, optimizer="adamw"))["optimizer"] == n * 2 * 2  # bf16 moments
    assert terms(llama, replace(FULL, optimizer="sgd"))["optimizer"] == 0
    eight = terms(llama, replace(FULL, optimizer="adamw_8bit"))["optimizer"]
    assert eight == pytest.approx(n * 2 * (1 + 4 / 256))
    paged = breakdown(llama, replace(FULL, optimizer="paged_adamw_8bit"))
    assert paged.terms["optimizer"] == 0 and paged.host["paged optimizer"] == pytest.approx(eight)
    assert terms(llama, replace(FULL, optimizer="adafactor"))["optimizer"] < n * 0.01
    assert terms(llama, replace(FULL, optimizer="adamw_fused"))["optimizer temporaries"] == 0
    assert terms(llama, FULL)["optimizer temporaries"] == n * 2


def test_master_weights_and_weights_dtype(llama: cm.Arch) -> None:
    n = cm.adapter_params(llama, "lora", 16, QV)
    assert terms(llama, LORA)["trainable"] == n * 4
    assert terms(llama, replace(LORA, master_weights="none"))["trainable"] == n * 2
    fp32 = terms(llama, replace(LORA, weights_dtype="fp32"))["weights"]
    assert fp32 == 2 * terms(llama, LORA)["weights"] == llama.params * 4


def test_quantized_base_keeps_embeddings_16_bit(llama: cm.Arch) -> None:
    nf4 = terms(llama, replace(LORA, quantize="nf4"))["weights"]
    dq = terms(llama, replace(LORA, quantize="nf4", double_quant=True))["weights"]
    linear = 28 * (3072 * 3072 * 2 + 3072 * 1024 * 2 + 3 * 3072 * 8192)
    assert nf4 == pytest.approx(linear * 0.5625 + (llama.params - linear) * 2)
    assert dq < nf4


def test_attention_eager_keeps_the_scores(llama: cm.Arch) -> None:
    sdpa, eager = terms(llama, LORA)["activations"], terms(llama, replace(LORA, attention="eager"))
    scores = 28 * 4 * llama.heads * 1024 * 1024 * (4 + 2)
    assert eager["activations"] - sdpa == pytest.approx(scores, rel=0.01)


def test_chunked_loss_and_logits(llama: cm.Arch) -> None:
    tv = 4 * 1024 * llama.vocab
    assert terms(llama, LORA)["logits"] == 12 * tv
    assert terms(llama, replace(LORA, chunked_loss=True))["logits"] == pytest.approx(5 * tv)


def test_optimizer_in_backward_keeps_one_gradient(llama: cm.Arch) -> None:
    inbwd = terms(llama, replace(FULL, optimizer_in_backward=True))["gradients"]
    assert inbwd == llama.vocab * llama.hidden * 2  # the embedding table's gradient


def test_lora_on_fused_projections_and_the_head(std: Spec, llama: cm.Arch) -> None:
    head = cm.adapter_params(llama, "lora", 8, ("lm_head",))
    assert head == 8 * (llama.hidden + llama.vocab)  # once, not per layer
    phi = std.base_model("phi3_mini")
    assert phi is not None
    arch = cm.Arch.of(phi)
    assert cm.adapter_params(arch, "lora", 8, ("qkv_proj",)) == 8 * (3072 + 3 * 3072) * 32


# ---- devices --------------------------------------------------------------------------


def test_sharding_divides_per_device_state(llama: cm.Arch) -> None:
    one = terms(llama, replace(FULL, devices=8))
    zero1 = terms(llama, replace(FULL, devices=8, sharding="zero1"))
    zero2 = terms(llama, replace(FULL, devices=8, sharding="zero2"))
    fsdp = terms(llama, replace(FULL, devices=8, sharding="fsdp"))
    assert zero1["optimizer"] == pytest.approx(one["optimizer"] / 8)
    assert zero1["gradients"] == one["gradients"]  # DDP buckets included
    assert zero2["gradients"] == pytest.approx(one["gradients"] / 2 / 8)
    assert fsdp["trainable"] == pytest.approx(one["trainable"] / 8)
    assert fsdp["gathered layers"] > 0 and one["gathered layers"] == 0
    offloaded = breakdown(llama, replace(FULL, devices=8, sharding="fsdp", offload="parameters"))
    assert offloaded.terms["trainable"] == offloaded.terms["optimizer"] == 0
    assert offloaded.host["optimizer"] > 0


SPEC = """
import std.models.llama3_2_3b
import std.hardware.HW
dataset d {
  source jsonl("d.jsonl")
  schema { p: text, c: text }
  grant read, train to "me"
}
model m {
  base llama3_2_3b
  task generate
  adapter ADAPTER
  train { data = d, prompt = p, completion = c, hardware = HW, SETTINGS }
}
"""


def spec_text(
    hw: str = "a10g", adapter: str = "full", batch: int = 2, seq: int = 1024, extra: str = ""
) -> str:
    return spec_with(hw, adapter, {"batch": str(batch), "seq_len": str(seq)}, extra)


def spec_with(hw: str, adapter: str, settings: dict[str, str], extra: str = "") -> str:
    written = ", ".join(f"{k} = {v}" for k, v in settings.items()) + extra
    values = {"HW": hw, "ADAPTER": adapter, "SETTINGS": written}
    return re.sub("|".join(values), lambda m: values[m.group(0)], SPEC)


def verify(text: str):  # type: ignore[no-untyped-def]
    result = check_text(text, "m.fm", Path.cwd(), verify=True)
    assert result.report is not None, result.diagnostics
    return result


def test_devices_are_never_pooled() -> None:
    # 3B in full on 8 A10Gs: 8 x 24 GB pooled would hold it, one device cannot.
    result = verify(spec_text(extra=", devices = 8"))
    assert not result.report.feasible
    (diagnostic,) = [d for d in result.diagnostics if d.code == "FM0601"]
    assert "each of 8 devices" in diagnostic.message
    sharded = verify(spec_text(extra=", devices = 8, sharding = fsdp, checkpointing = full"))
    assert sharded.report.feasible, sharded.diagnostics


def test_every_suggested_change_fits_when_written() -> None:
    lora = "lora(rank = 8, targets = [q_proj, v_proj])"
    start = {"batch": "8", "seq_len": "2048"}
    result = verify(spec_with("a10g", lora, start))
    (diagnostic,) = [d for d in result.diagnostics if d.code == "FM0601"]
    written = [m.group(1) for n in diagnostic.notes if (m := re.match(r"`(.*)` saves", n))]
    assert written, diagnostic.notes
    for change in written:
        pairs = dict(p.strip().split(" = ") for p in re.split("[;,]", change))
        fixed = verify(spec_with("a10g", lora, {**start, **pairs}))
        assert fixed.report.feasible, (change, fixed.diagnostics)


def test_plan_json_keeps_its_keys_and_adds_the_breakdown() -> None:
    report = verify(spec_text(hw="h100")).report
    (stage,) = [s for s in report.to_json()["stages"] if s["stage"] == "train:m"]
    assert "train.memory@h100" in stage["estimates"]
    memory = stage["memory"]
    assert memory["fits"] and memory["devices"] == 1
    assert memory["allocated"] == max(memory["phases"].values())
    extra = memory["per_device"]["allocator"] + memory["per_device"]["context"]
    assert memory["peak"] == pytest.approx(memory["allocated"] + extra, abs=2)
    assert report.to_json()["schema_version"] == "2"


# ---- the solver agrees with plain arithmetic ----------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.sampled_from([1, 2, 4, 8]),
    seq=st.sampled_from([256, 1024, 4096]),
    checkpointing=st.sampled_from(["off", "selective", "full", "offload"]),
    optimizer=st.sampled_from(["adamw", "adamw_fused", "adamw_8bit", "sgd", "adafactor"]),
    full=st.booleans(),
    hw=st.sampled_from(["a10g", "a100_40gb", "h100"]),
)
def test_verdict_equals_the_arithmetic(
    std: Spec, batch: int, seq: int, checkpointing: str, optimizer: str, full: bool, hw: str
) -> None:
    adapter = "full" if full else "lora(rank = 8, targets = [q_proj, v_proj])"
    extra = f", checkpointing = {checkpointing}, optimizer = {optimizer}"
    result = verify(spec_text(hw, adapter, batch, seq, extra))
    base, profile = std.base_model("llama3_2_3b"), std.hardware_profile(hw)
    assert base is not None and profile is not None and profile.memory is not None
    setup = TrainSetup(
        adapter="full" if full else "lora", rank=8, targets=() if full else QV, batch=batch,
        seq=seq, checkpointing=checkpointing, optimizer=optimizer, weights_dtype="bf16",
        master_weights="none" if full else "fp32", precision="bf16",
    )  # fmt: skip
    peak = breakdown(cm.Arch.of(base), setup).peak
    assert result.report.feasible == (peak <= profile.memory.value)
    assert DTYPE_BYTES["bf16"] == 2


def test_offloaded_state_must_fit_host_memory() -> None:
    profile = """
hardware node {
  kind gpu
  devices 8
  memory 80GB
  bandwidth 2TB/s
  peak_bf16 312TFLOPS
  host_memory HOST
}
"""

    def text(host: str) -> str:
        spec = spec_text(
            hw="a100_80gb", extra=", devices = 8, sharding = fsdp, offload = parameters"
        )
        spec = spec.replace("import std.hardware.a100_80gb", profile.replace("HOST", host))
        return spec.replace("hardware = a100_80gb", "hardware = node")

    # 3B in full with everything offloaded: fp32 master weights, AdamW moments and gradients
    # of 3.2e9 parameters (about 48 GiB) plus the checkpoint while it loads.
    small = verify(text("32GiB"))
    assert not small.report.feasible
    assert any("host memory" in d.message for d in small.diagnostics)
    assert verify(text("512GiB")).report.feasible


def test_too_many_auto_knobs_are_refused_not_ground_through() -> None:
    extra = ", checkpointing = auto, optimizer = auto, sharding = auto, offload = auto, devices = 8"
    text = spec_with("a100_80gb", "lora(rank = auto, targets = [q_proj, v_proj])",
                     {"batch": "auto", "seq_len": "auto"}, extra)  # fmt: skip
    text = text.replace("  task generate", "  task generate\n  quantize auto")
    text += "constraints m { memory <= 70GB on a100_80gb }\n"
    result = verify(text)
    (refusal,) = [d for d in result.diagnostics if d.code == "FM0610"]
    assert "`train.offload` (3)" in refusal.labels[0].text
    assert "`quantize` (4)" in refusal.labels[0].text  # bare auto: no gptq/awq
    narrowed = text.replace("seq_len = auto", "seq_len = 1024").replace("rank = auto", "rank = 8")
    assert verify(narrowed).report.feasible


def test_the_lowering_evaluates_what_the_verifier_verified() -> None:
    """`training_memory_at` (the launch configs' estimate) sees the setup the encoder saw,
    also for knobs the solver did not choose: an `auto` rank nothing serves stays 8."""
    from fmlang.verify.train_fit import training_memory_at

    text = spec_with("a100_80gb", "lora(rank = auto, targets = [q_proj, v_proj])",
                     {"batch": "auto", "seq_len": "1024"}, ", checkpointing = auto")  # fmt: skip
    result = verify(text)
    report = result.report
    (stage,) = [s for s in report.stages if s["stage"] == "train:m"]
    found = training_memory_at(compile_spec(result), compile_spec(result).models[0], report.knobs)
    assert found is not None
    setup, breakdown_at, _ = found
    assert setup.rank == 8 and setup.batch == report.knobs["m.train.batch"]
    assert round(breakdown_at.peak) == stage["memory"]["peak"]

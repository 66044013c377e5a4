"""The cost model's formulas against hand-computed figures, and the solver against them.

The unit tests pin each formula of `fmlang.verify.costmodel` to a figure worked out by
hand from published architecture facts. The property tests build random specs (random
base-model facts, fixed knobs and a memory bound), verify them with Z3 and compare the
verdict with the same formula evaluated in plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fmlang.api import check_text, compile_spec
from fmlang.ir.base import Quantity
from fmlang.ir.nodes import Hardware, Spec
from fmlang.verify import costmodel as cm

GIB = 2**30


@pytest.fixture(scope="module")
def std() -> Spec:
    result = check_text("import std.models\nimport std.hardware\n", "std.fm", Path.cwd())
    return compile_spec(result)


def arch_of(std: Spec, name: str) -> cm.Arch:
    base = std.base_model(name)
    assert base is not None
    return cm.Arch.of(base)


def hw_of(std: Spec, name: str) -> Hardware:
    hardware = std.hardware_profile(name)
    assert hardware is not None
    return hardware


# ---- unit tests: formulas against figures computed by hand --------------------------


def test_lora_params_minilm_query_value(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    # rank x (d_in + d_out) per layer, two 384x384 targets, six layers
    assert cm.adapter_params(minilm, "lora", 8, ("query", "value")) == 8 * (384 + 384) * 2 * 6
    assert cm.adapter_params(minilm, "lora", 8, ("query", "value")) == 73_728


def test_lora_params_bert_dense_covers_three_layers(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    per_layer = 4 * ((384 + 384) + (384 + 1536) + (1536 + 384))
    assert cm.adapter_params(minilm, "lora", 4, ("dense",)) == per_layer * 6 == 110_592


def test_lora_params_grouped_query_attention(std: Spec) -> None:
    llama = arch_of(std, "llama3_8b")
    # q_proj 4096 -> 4096; v_proj 4096 -> 8 kv heads x 128 = 1024; 32 layers
    expected = 16 * ((4096 + 4096) + (4096 + 1024)) * 32
    assert cm.adapter_params(llama, "lora", 16, ("q_proj", "v_proj")) == expected == 6_815_744


def test_dora_adds_magnitude_vectors(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    assert cm.adapter_params(minilm, "dora", 8, ("query", "value")) == 73_728 + 2 * 384 * 6


def test_prefix_and_prompt_params(std: Spec) -> None:
    llama = arch_of(std, "llama3_2_1b")
    assert cm.adapter_params(llama, "prefix", 0, (), virtual_tokens=30) == 30 * 2 * 16 * 2048
    assert cm.adapter_params(llama, "prompt", 0, (), virtual_tokens=30) == 30 * 2048


def test_full_trains_every_parameter(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    assert cm.adapter_params(minilm, "full", 0, ()) == 22_713_216


def test_weight_bytes_by_precision(std: Spec) -> None:
    llama = arch_of(std, "llama3_8b")
    params = 8_030_261_248
    assert cm.weight_bytes(llama, "none") == 2 * params  # ships in bf16
    assert cm.weight_bytes(llama, "int8") == params
    assert cm.weight_bytes(llama, "nf4") == 0.5625 * params  # 4 bits + an fp32 per 64
    assert cm.weight_bytes(arch_of(std, "minilm_l6"), "none") == 4 * 22_713_216  # fp32


def test_kv_cache_llama3_8b_8k_tokens_is_one_gib(std: Spec) -> None:
    llama = arch_of(std, "llama3_8b")
    # 8192 tokens x 32 layers x (K and V) x 8 kv heads x 128 x 2 bytes
    assert cm.kv_cache_bytes(llama, 1, 8192) == 1 * GIB
    assert cm.kv_cache_bytes(llama, 4, 2048) == 1 * GIB


def test_encoders_have_no_kv_cache(std: Spec) -> None:
    assert cm.kv_cache_bytes(arch_of(std, "minilm_l6"), 8, 512) == 0


def test_inference_activations(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    # batch x (seq x (4 x hidden + intermediate) + heads x seq^2) x 4 bytes (fp32)
    expected = 2 * (128 * (4 * 384 + 1536) + 12 * 128 * 128) * 4
    assert cm.inference_activation_bytes(minilm, 2, 128) == expected == 4_718_592


def test_serving_memory_is_the_sum(std: Spec) -> None:
    llama = arch_of(std, "llama3_8b")
    total = cm.serving_memory(llama, "int8", 1_000.0, 3, 1, 8192)
    parts = (8_030_261_248 + 3 * 1_000 + GIB
             + cm.inference_activation_bytes(llama, 1, 8192))  # fmt: skip
    assert total == parts


def test_training_memory(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    trainable = 73_728
    # fp32 weights + 16 bytes per trainable parameter + 6 layers of activations at
    # s*b*h*(34 + 5*a*s/h), doubled for fp32
    per_layer = 128 * 8 * 384 * (34 + 5 * 12 * 128 / 384)
    expected = 4 * 22_713_216 + 16 * trainable + 6 * per_layer * 2
    assert cm.training_memory(minilm, trainable, 8, 128, "fp32") == pytest.approx(expected)
    half = 4 * 22_713_216 + 16 * trainable + 6 * per_layer
    assert cm.training_memory(minilm, trainable, 8, 128, "bf16") == pytest.approx(half)


def test_matmul_params_exclude_lookups(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    # encoders look up token and position embeddings
    assert cm.matmul_params(minilm) == 22_713_216 - 30522 * 384 - 512 * 384 == 10_796_160
    llama = arch_of(std, "llama3_8b")  # untied: the head is among the params already
    assert cm.matmul_params(llama) == 8_030_261_248 - 128256 * 4096
    tied = cm.Arch(**{**arch_of(std, "llama3_2_1b").__dict__, "tied": True})
    assert cm.matmul_params(tied) == 1_235_814_400  # the shared head multiplies once more


# The stdlib comments say these checkpoints tie lm_head to the embeddings.
TIED = ["llama3_2_1b", "llama3_2_3b", "qwen2_5_0_5b", "qwen2_5_1_5b"]


@pytest.mark.parametrize("name", TIED)
def test_stdlib_tied_models_are_tied(std: Spec, name: str) -> None:
    assert arch_of(std, name).tied


def test_forward_flops(std: Spec) -> None:
    minilm = arch_of(std, "minilm_l6")
    expected = 2 * (2.0 * 10_796_160 * 128 + 4.0 * 6 * 128 * 128 * 384)
    assert cm.forward_flops(minilm, 2, 128) == expected


def test_peak_flops_by_precision(std: Spec) -> None:
    h100, cpu = hw_of(std, "h100"), hw_of(std, "cpu_2core")
    assert cm.peak_flops(h100, "none", "bf16") == 989e12 * 0.5
    assert cm.peak_flops(h100, "int8", "bf16") == 1979e12 * 0.5
    assert cm.peak_flops(h100, "none", "fp32") == 67e12 * 0.5
    assert cm.peak_flops(cpu, "none", "fp32") == pytest.approx(294e9 * 0.5)


def test_encoder_latency_is_one_forward_pass(std: Spec) -> None:
    minilm, cpu = arch_of(std, "minilm_l6"), hw_of(std, "cpu_2core")
    compute = cm.forward_flops(minilm, 1, 128) / (294e9 * 0.5)
    assert compute > 4 * 22_713_216 / 20e9  # compute-bound on a CPU
    assert cm.request_seconds(minilm, cpu, "none", 1, 128) == pytest.approx(compute)
    assert cm.request_seconds(minilm, cpu, "none", 1, 128) == pytest.approx(0.0198, abs=5e-4)


def test_decoder_latency_adds_decode_steps(std: Spec) -> None:
    llama, a10g = arch_of(std, "llama3_8b"), hw_of(std, "a10g")
    # Decode streams the weights that multiply activations (all but the 128256 x 4096 input
    # embedding table) at 0.77 of the datasheet bandwidth (measured on an H200).
    streamed = 2 * (8_030_261_248 - 128_256 * 4096)
    prefill = max(cm.forward_flops(llama, 1, 1024) / (125e12 * 0.5), streamed / (600e9 * 0.77))
    step = (streamed + cm.kv_cache_bytes(llama, 1, 1024)) / (600e9 * 0.77)
    expected = prefill + 128 * step
    assert cm.request_seconds(llama, a10g, "none", 1, 1024) == pytest.approx(expected)


def test_throughput_and_cost(std: Spec) -> None:
    qwen, a10g = arch_of(std, "qwen2_5_0_5b"), hw_of(std, "a10g")
    seconds = cm.request_seconds(qwen, a10g, "none", 4, 512)
    assert cm.throughput(qwen, a10g, "none", 4, 512, 3, False) == pytest.approx(3 * 4 / seconds)
    tokens = cm.throughput(qwen, a10g, "none", 4, 512, 3, True)
    assert tokens == pytest.approx(3 * 4 / seconds * 128)
    minilm = arch_of(std, "minilm_l6")  # an encoder generates no tokens
    assert cm.throughput(minilm, a10g, "none", 1, 128, 1, True) == cm.throughput(
        minilm, a10g, "none", 1, 128, 1, False
    )
    assert cm.cost_per_hour(a10g, 3) == pytest.approx(3 * 1.01)


def test_arch_defaults_fill_missing_facts(std: Spec) -> None:
    tiny = arch_of(std, "tiny_causal_lm")
    assert (tiny.head_dim, tiny.kv_heads, tiny.decoder) == (16, 2, True)
    assert cm.module_shapes(tiny, "k_proj") == [(64, 32)]
    assert cm.module_shapes(tiny, "down_proj") == [(128, 64)]


# ---- the verifier's estimates against the formulas ----------------------------------


ADAPTER_SPEC = """\
import std.models.{models}
import std.hardware.h200

model m {{
  base    {base}
  task    {task}
  adapter {adapter}
  max_seq 512
  grant deploy to "team:ml"
}}

constraints m {{
  memory <= 200GiB on h200
}}

deploy m {{
  adapters     dynamic
  max_adapters 64
  local {{ port = 8080 }}
  grant query to "team:ml"
}}
"""


def _memory_estimate(base: str, task: str, adapter: str) -> float:
    text = ADAPTER_SPEC.format(models=base, base=base, task=task, adapter=adapter)
    result = check_text(text, "adapter.fm", Path.cwd(), verify=True)
    assert result.report is not None and result.report.feasible, result.diagnostics
    (row,) = result.report.constraints
    return float(row["estimate"])


def _serving(arch: cm.Arch, adapter_params: int) -> float:
    adapter_bytes = adapter_params * cm.activation_bytes(arch)
    return cm.serving_memory(arch, "none", adapter_bytes, 64, 1, 512)


def test_verifier_costs_lora_adapters_like_the_formula(std: Spec) -> None:
    llama = arch_of(std, "llama3_2_1b")
    estimate = _memory_estimate("llama3_2_1b", "generate", "lora(rank = 16, targets = [q_proj])")
    assert estimate == pytest.approx(_serving(llama, 16 * (2048 + 2048) * 16), rel=1e-9)


def test_verifier_costs_prefix_tokens(std: Spec) -> None:
    llama = arch_of(std, "llama3_2_1b")
    estimate = _memory_estimate("llama3_2_1b", "generate", "prefix(virtual_tokens = 200)")
    assert estimate == pytest.approx(_serving(llama, 200 * 2 * 16 * 2048), rel=1e-9)


def test_verifier_costs_ia3_feedforward_by_input_size(std: Spec) -> None:
    llama = arch_of(std, "llama3_2_1b")
    adapter = "ia3(targets = [down_proj], feedforward = [down_proj])"
    estimate = _memory_estimate("llama3_2_1b", "generate", adapter)
    assert estimate == pytest.approx(_serving(llama, 8192 * 16), rel=1e-9)


# ---- property: Z3's memory verdict equals plain arithmetic --------------------------


DECODER_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ENCODER_MODULES = ("query", "key", "value", "dense")


@dataclass(frozen=True)
class Case:
    arch: cm.Arch
    rank: int
    targets: tuple[str, ...]
    quantize: str
    batch: int
    seq: int
    resident: int
    seq_on_deploy: bool
    bound_bytes: int

    def adapter_bytes(self) -> float:
        params = cm.adapter_params(self.arch, "lora", self.rank, self.targets)
        return params * cm.activation_bytes(self.arch)

    def memory(self) -> float:
        return cm.serving_memory(self.arch, self.quantize, self.adapter_bytes(), self.resident,
                                 self.batch, self.seq)  # fmt: skip


@st.composite
def cases(draw: st.DrawFn) -> Case:
    decoder = draw(st.booleans())
    head_dim = draw(st.sampled_from([16, 32, 64, 128]))
    heads = draw(st.integers(1, 32))
    kv_heads = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0]))
    hidden = heads * head_dim
    arch = cm.Arch(
        params=draw(st.integers(10_000, 80_000_000_000)),
        layers=draw(st.integers(1, 96)),
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads if decoder else heads,
        head_dim=head_dim,
        intermediate=draw(st.integers(1, 8)) * hidden,
        vocab=draw(st.integers(100, 200_000)),
        max_seq=draw(st.sampled_from([512, 2048, 8192, 32768])),
        dtype=draw(st.sampled_from(["fp32", "bf16", "fp16"])),
        decoder=decoder,
        family="llama" if decoder else "bert",
    )
    modules = DECODER_MODULES if decoder else ENCODER_MODULES
    targets = draw(st.lists(st.sampled_from(modules), min_size=1, max_size=4, unique=True))
    case = Case(
        arch=arch,
        rank=draw(st.integers(1, 256)),
        targets=tuple(targets),
        quantize=draw(st.sampled_from(["none", "int8", "nf4", "fp4"])),
        batch=draw(st.integers(1, 64)),
        seq=draw(st.integers(1, arch.max_seq)),
        resident=draw(st.integers(1, 16)),
        seq_on_deploy=draw(st.booleans()),
        bound_bytes=0,
    )
    ratio = draw(st.floats(0.5, 2.0))
    return Case(**{**case.__dict__, "bound_bytes": max(1, round(case.memory() * ratio))})


FULL_PROFILE = "kind gpu\n  memory 1000TB\n  bandwidth 1TB/s\n  peak_bf16 100TFLOPS"


def spec_text(case: Case, constraint: str = "", hardware: str = FULL_PROFILE) -> str:
    constraint = constraint or f"memory <= {case.bound_bytes}B on box"
    a = case.arch
    model_seq = "" if case.seq_on_deploy else f"  max_seq  {case.seq}\n"
    deploy_seq = f"  max_seq      {case.seq}\n" if case.seq_on_deploy else ""
    return (
        f'base_model rnd {{\n  family "{a.family}"\n'
        f"  kind {'decoder' if a.decoder else 'encoder'}\n  params {a.params}\n"
        f"  layers {a.layers}\n  hidden {a.hidden}\n  heads {a.heads}\n"
        f"  kv_heads {a.kv_heads}\n  intermediate {a.intermediate}\n  vocab {a.vocab}\n"
        f"  max_seq {a.max_seq}\n  dtype {a.dtype}\n"
        f"  modules [{', '.join(DECODER_MODULES if a.decoder else ENCODER_MODULES)}]\n}}\n\n"
        f"hardware box {{\n  {hardware}\n}}\n\n"
        f"model m {{\n  base     rnd\n  task     {'generate' if a.decoder else 'embed'}\n"
        f"  adapter  lora(rank = {case.rank}, targets = [{', '.join(case.targets)}])\n"
        f'  quantize {case.quantize}\n{model_seq}  grant deploy to "team:ml"\n}}\n\n'
        f"constraints m {{\n  {constraint}\n}}\n\n"
        f"deploy m {{\n  adapters     dynamic\n  batch        {case.batch}\n"
        f"  max_adapters {case.resident}\n{deploy_seq}  local {{ port = 8080 }}\n"
        '  grant query to "team:ml"\n}\n'
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_memory_verdict_matches_arithmetic(case: Case) -> None:
    needed, bound = case.memory(), float(case.bound_bytes)
    assume(abs(needed - bound) > 1e-6 * bound)
    event("fits" if needed <= bound else "does not fit")
    event("decoder" if case.arch.decoder else "encoder")
    result = check_text(spec_text(case), "random.fm", Path.cwd(), verify=True)
    report = result.report
    assert report is not None, [d.message for d in result.diagnostics]
    assert report.feasible == (needed <= bound), (needed, bound, report.diagnostics)
    (row,) = report.constraints
    if report.feasible:
        assert row["estimate"] == pytest.approx(needed, rel=1e-9)
    else:
        (error,) = report.diagnostics
        assert error.code == "FM0601"
        lines = {label.span.line for label in error.labels}
        # the bound, plus the lines of the fixed knobs the estimate depends on
        assert _bound_line(spec_text(case)) in lines
        assert error.labels[0].span.line == _bound_line(spec_text(case)) or any(
            label.primary and label.span.line == _bound_line(spec_text(case))
            for label in error.labels
        )


def _bound_line(text: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if " <= " in line)


# ---- property: Z3's latency verdict equals plain arithmetic -------------------------


@dataclass(frozen=True)
class Device:
    kind: str
    bandwidth_gbs: int
    peaks_gflops: dict[str, int]

    def text(self) -> str:
        peaks = "".join(f"\n  peak_{k} {v}GFLOPS" for k, v in sorted(self.peaks_gflops.items()))
        return f"kind {self.kind}\n  memory 1000TB\n  bandwidth {self.bandwidth_gbs}GB/s{peaks}"

    def profile(self) -> Hardware:
        def flops(key: str) -> Quantity | None:
            value = self.peaks_gflops.get(key)
            return (
                None
                if value is None
                else Quantity(
                    value=value * 1e9, unit="FLOPS", dimension="compute", text=f"{value}GFLOPS"
                )
            )

        bandwidth = Quantity(value=self.bandwidth_gbs * 1e9, unit="B/s", dimension="bandwidth",
                             text=f"{self.bandwidth_gbs}GB/s")  # fmt: skip
        return Hardware(name="box", file="random.fm", kind=self.kind,  # type: ignore[arg-type]
                        bandwidth=bandwidth, peak_fp32=flops("fp32"), peak_bf16=flops("bf16"),
                        peak_int8=flops("int8"))  # fmt: skip


devices = st.builds(
    Device,
    kind=st.sampled_from(["cpu", "gpu"]),
    bandwidth_gbs=st.integers(10, 5000),
    peaks_gflops=st.fixed_dictionaries(
        {"fp32": st.integers(50, 100_000)},
        optional={"bf16": st.integers(100, 2_000_000), "int8": st.integers(100, 4_000_000)},
    ),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), devices, st.floats(0.5, 2.0))
def test_latency_verdict_matches_arithmetic(case: Case, device: Device, ratio: float) -> None:
    needed = cm.request_seconds(case.arch, device.profile(), case.quantize, case.batch,
                                case.seq)  # fmt: skip
    bound = float(repr(needed * ratio))
    assume(abs(needed - bound) > 1e-6 * bound)
    text = spec_text(case, f"latency.p95 <= {bound!r}s on box", device.text())
    report = check_text(text, "random.fm", Path.cwd(), verify=True).report
    assert report is not None
    assert report.feasible == (needed <= bound), (needed, bound, report.diagnostics)
    if report.feasible:
        (row,) = report.constraints
        assert row["estimate"] == pytest.approx(needed, rel=1e-6)


def test_solver_numbers_keep_their_digits_at_any_scale() -> None:
    """Found by the latency property test: a fixed denominator of 10^9 made 1e-9 s and
    5e-10 s the same number to Z3."""
    import z3

    from fmlang.verify.problem import real

    assert z3.is_true(z3.simplify(real(1e-9) > real(5e-10)))
    assert z3.is_true(z3.simplify(real(3.2e15) > real(3.2e15 * (1 - 1e-9))))
    assert z3.is_true(z3.simplify(real(float("nan")) == 0))

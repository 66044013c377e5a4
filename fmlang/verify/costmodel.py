"""The cost model: memory, latency, throughput and cost from architecture facts.

Every figure is a plain function of the base model's published facts (`std.models`), the
hardware profile (`std.hardware`) and the knob values, so the solver can tabulate it and a
benchmark (`benchmarks/cost_model.py`) can compare it with measurements. Sources:

- weights: parameters x bytes per parameter. fp32 4, bf16/fp16 2, int8 1 (LLM.int8 keeps
  one fp16 scale per row; negligible), nf4/fp4 0.5 plus one fp32 absmax per 64-weight block
  = 0.5625 (QLoRA, Dettmers et al. 2023, without double quantization).
- LoRA adds rank x (d_in + d_out) parameters per targeted linear layer (Hu et al. 2021);
  DoRA adds a d_out magnitude vector per layer (Liu et al. 2024); IA3 adds d_out (or d_in
  for feed-forward) scaling vectors (Liu et al. 2022); prefix tuning adds
  virtual_tokens x 2 x layers x hidden; prompt tuning adds virtual_tokens x hidden.
- training: frozen weights + trainable parameters x (weight 4 + gradient 4 + AdamW's two
  moments 8) bytes in fp32, plus activations s*b*h*(34 + 5*a*s/h) bytes per layer at 16-bit
  (Korthikanti et al. 2022, no recomputation; doubled for fp32).
- KV cache (decoders): batch x sequence x layers x 2 x kv_heads x head_dim x bytes.
- inference activations: the largest live tensors of one layer: batch x seq x
  (4 x hidden + intermediate) plus the attention scores batch x heads x seq^2, at the
  activation precision.
- prefill/forward time: FLOPs / (peak x efficiency) with FLOPs = 2 x N x tokens +
  4 x layers x seq^2 x hidden per sequence (Kaplan et al. 2020), N the parameters that
  multiply activations (embedding lookups excluded), and never less than the time to read
  the weights once from memory (roofline).
- decode time per token: (weights + KV cache) bytes / memory bandwidth.
- throughput: replicas x batch / latency; cost: replicas x devices x price per device-hour.

Efficiencies are assumptions stated here and checked by the benchmark: GPUs reach 50% of
their dense peak on transformer matmuls, CPUs 50% (measured here: MiniLM-L6 in fp32 on the
2-core CI machine reached 157-216 GFLOPS of its 294 GFLOPS fp32 peak, i.e. 53-73%, at batch
1-4 and 128 tokens; 50% keeps the estimate an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.ir.nodes import Hardware, PretrainedModel

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": 0.5625,
                   "fp4": 0.5625, "gptq": 0.5 + 2.5 / 128, "awq": 0.5 + 2.5 / 128}  # fmt: skip
EFFICIENCY = {"gpu": 0.5, "cpu": 0.5}
GENERATED_TOKENS = 128  # new tokens per generate request, for latency and throughput
GIB = 2.0**30


@dataclass(frozen=True)
class Arch:
    """The facts the formulas read, with derived sizes filled in."""

    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_seq: int
    dtype: str
    decoder: bool
    family: str
    tied: bool = False
    gated: bool = True  # gate, up and down projections (SwiGLU); False: up and down
    experts: int = 1  # MoE: experts stored per layer
    experts_per_token: int = 1  # MoE: experts each token runs through

    @classmethod
    def of(cls, base: PretrainedModel) -> Arch:
        hidden = base.hidden or 768
        heads = base.heads or max(hidden // 64, 1)
        return cls(
            params=base.params or 0,
            layers=base.layers or 1,
            hidden=hidden,
            heads=heads,
            kv_heads=base.kv_heads or heads,
            head_dim=base.head_dim or hidden // heads,
            intermediate=base.intermediate or 4 * hidden,
            vocab=base.vocab or 0,
            max_seq=base.max_seq or 512,
            dtype=base.dtype or "fp32",
            decoder=base.kind == "decoder",
            family=base.family or "",
            tied=bool(base.tie_embeddings),
            gated=(base.mlp or ("gated" if base.kind == "decoder" else "plain")) == "gated",
            experts=base.experts or 1,
            experts_per_token=base.experts_per_token or 1,
        )


HEAD_MODULES = ("lm_head",)  # linear layers outside the blocks: counted once, not per layer


def module_shapes(arch: Arch, module: str) -> list[tuple[int, int]]:
    """(d_in, d_out) of every linear layer one target name covers, per transformer layer
    (for `lm_head`: once). Fused projections (GPT-2 `c_attn`, BLOOM/Falcon
    `query_key_value`, Phi-3 `qkv_proj` and `gate_up_proj`) are one layer of the combined
    width; MoE expert layers (Mixtral `w1`, `w2`, `w3`) repeat per expert."""
    h, i, e = arch.hidden, arch.intermediate, arch.experts
    q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    shapes = {
        "q_proj": [(h, q)], "k_proj": [(h, kv)], "v_proj": [(h, kv)], "o_proj": [(q, h)],
        "gate_proj": [(h, i)], "up_proj": [(h, i)], "down_proj": [(i, h)],
        "query": [(h, h)], "key": [(h, h)], "value": [(h, h)],
        # BERT names three layers `dense`: attention output, intermediate and output.
        "dense": [(h, h), (h, i), (i, h)] if not arch.decoder else [(q, h)],
        "c_attn": [(h, q + 2 * kv)], "c_proj": [(q, h), (i, h)], "c_fc": [(h, i)],
        "query_key_value": [(h, q + 2 * kv)], "qkv_proj": [(h, q + 2 * kv)],
        "gate_up_proj": [(h, 2 * i)], "dense_h_to_4h": [(h, i)], "dense_4h_to_h": [(i, h)],
        "w1": [(h, i)] * e, "w3": [(h, i)] * e, "w2": [(i, h)] * e, "gate": [(h, e)],
        "lm_head": [(h, arch.vocab)],
    }  # fmt: skip
    return shapes.get(module, [(h, h)])


def adapter_params(
    arch: Arch,
    kind: str,
    rank: int,
    targets: tuple[str, ...],
    virtual_tokens: int = 20,
    feedforward: tuple[str, ...] = (),
    density: float = 0.0,
) -> int:
    """Trainable parameters an adapter adds (for `fisher_mask`, the base parameters its
    mask trains: `density` of them)."""

    def per_copy(module: str) -> int:
        return 1 if module in HEAD_MODULES else arch.layers

    if kind in ("lora", "dora"):
        total = 0
        for module in targets:
            for d_in, d_out in module_shapes(arch, module):
                magnitude = d_out if kind == "dora" else 0
                total += (rank * (d_in + d_out) + magnitude) * per_copy(module)
        return total
    if kind == "ia3":  # feed-forward modules scale their input, the others their output
        return sum(
            (d_in if module in feedforward else d_out) * per_copy(module)
            for module in targets
            for d_in, d_out in module_shapes(arch, module)
        )
    if kind == "prefix":
        return virtual_tokens * 2 * arch.layers * arch.hidden
    if kind == "prompt":
        return virtual_tokens * arch.hidden
    if kind == "full":
        return arch.params
    if kind == "fisher_mask":
        return round(density * arch.params)
    return 0


def weight_bytes(arch: Arch, quantize: str) -> float:
    precision = arch.dtype if quantize == "none" else quantize
    return arch.params * BYTES_PER_PARAM[precision]


def activation_bytes(arch: Arch) -> float:
    return BYTES_PER_PARAM[arch.dtype]


def kv_cache_bytes(arch: Arch, batch: int, seq: int) -> float:
    if not arch.decoder:
        return 0.0
    return batch * seq * arch.layers * 2 * arch.kv_heads * arch.head_dim * activation_bytes(arch)


def inference_activation_bytes(arch: Arch, batch: int, seq: int) -> float:
    per_token = 4 * arch.hidden + arch.intermediate
    scores = arch.heads * seq * seq
    return batch * (seq * per_token + scores) * activation_bytes(arch)


# Resident memory of the `fmc serve` process itself, with a model of negligible size: 418 MiB
# (the interpreter, torch, transformers, peft and the HTTP stack). Measured on the CI machine
# (2 cores; Python 3.11, torch 2.13.0+cpu, transformers 5.25): `fmc serve --config` on the
# build folder of the stdlib `tiny_causal_lm` (0.8 MiB of weights, one rank-4 adapter), /ready,
# then 20 completions of 16 tokens; /proc/<pid>/status VmHWM 417.6-417.7 MiB over 3 runs and
# OMP_NUM_THREADS 1 to 32. On a CPU profile the model shares the host's memory with it, so a
# `memory <= … on <cpu profile>` constraint and the profile's capacity count it;
# tests/test_deploy_start.py checks a started server's RSS against the emitted limit.
SERVE_PROCESS_BYTES = 418 * 2**20


def serving_memory(
    arch: Arch, quantize: str, adapter_bytes: float, resident: int, batch: int, seq: int
) -> float:
    """Peak bytes one replica holds: weights, resident adapters, KV cache, activations."""
    return (
        weight_bytes(arch, quantize)
        + resident * adapter_bytes
        + kv_cache_bytes(arch, batch, seq)
        + inference_activation_bytes(arch, batch, seq)
    )


def training_memory(arch: Arch, trainable: int, batch: int, seq: int, precision: str) -> float:
    frozen = weight_bytes(arch, "none")
    optimizer = trainable * 16.0
    per_layer = seq * batch * arch.hidden * (34 + 5 * arch.heads * seq / arch.hidden)
    scale = 2.0 if precision == "fp32" else 1.0
    return frozen + optimizer + arch.layers * per_layer * scale


def matmul_params(arch: Arch) -> float:
    """Parameters that multiply activations: all but the input embedding tables (token and,
    for encoders, position), which are lookups; a tied output head still multiplies."""
    lookups = arch.vocab * arch.hidden + (0 if arch.decoder else arch.max_seq * arch.hidden)
    head = arch.vocab * arch.hidden if arch.decoder else 0
    return max(arch.params - lookups, 0) + (head if arch.tied else 0)


def forward_flops(arch: Arch, batch: int, seq: int) -> float:
    return batch * (2.0 * matmul_params(arch) * seq + 4.0 * arch.layers * seq * seq * arch.hidden)


def peak_flops(hw: Hardware, quantize: str, dtype: str) -> float:
    kind = hw.kind or "gpu"
    if quantize == "int8" and hw.peak_int8 is not None:
        peak = hw.peak_int8.value
    elif dtype in ("bf16", "fp16") and hw.peak_bf16 is not None:
        peak = hw.peak_bf16.value
    else:
        fallback = hw.peak_fp32 or hw.peak_bf16
        peak = fallback.value if fallback is not None else 1e12
    return peak * EFFICIENCY[kind]


# Decode reads every weight once per step: a memory-bound stream that reaches a fraction of
# the datasheet bandwidth. Measured on an H200 with torch 2.11 (benchmarks/decode_bandwidth.py:
# batch-1 bf16 matrix-vector products over 8 GiB of Llama-3-8B MLP matrices ran at 3,696 GB/s,
# 0.77 of the datasheet's 4.8 TB/s and 0.87 of a device-to-device copy in the same run). CPU
# profiles state a sustained figure already (cpu_2core: 20 GB/s).
BANDWIDTH_EFFICIENCY = {"gpu": 0.77, "cpu": 1.0}
# One all-reduce of a decode step's activations under tensor parallelism: NCCL's latency
# for small messages over NVLink, 6 us on 2 H100s with CUDA graphs (NVIDIA/nccl#1259) and
# growing with the GPU count; 20 us budgeted. Two per layer (attention and MLP outputs).
ALLREDUCE_LATENCY = 20e-6


def bandwidth(hw: Hardware) -> float:
    return hw.bandwidth.value if hw.bandwidth is not None else 1e11


def stream_bandwidth(hw: Hardware) -> float:
    """The bandwidth a memory-bound decode step reaches."""
    return bandwidth(hw) * BANDWIDTH_EFFICIENCY[hw.kind or "gpu"]


def decode_weight_bytes(arch: Arch, quantize: str, batch: int) -> float:
    """Weights one decode step reads: every matrix that multiplies activations (not the
    embedding table, a lookup); of an MoE's experts only those the batch's tokens route to
    (each of E experts is hit with probability 1 - (1 - k/E)^batch)."""
    per_param = BYTES_PER_PARAM[arch.dtype if quantize == "none" else quantize]
    read = matmul_params(arch)
    if arch.experts > 1:
        expert = (3 if arch.gated else 2) * arch.hidden * arch.intermediate
        hit = 1 - (1 - arch.experts_per_token / arch.experts) ** batch
        read -= arch.layers * expert * arch.experts * (1 - hit)
    return read * per_param


def decode_step_seconds(
    arch: Arch, hw: Hardware, quantize: str, batch: int, seq: int, tp: int = 1
) -> float:
    """One decode step: the device's share of the weights and the KV cache streamed once,
    plus two all-reduces per layer of the step's activations when tensor parallel."""
    read = (decode_weight_bytes(arch, quantize, batch) + kv_cache_bytes(arch, batch, seq)) / tp
    step = read / stream_bandwidth(hw)
    if tp > 1:
        message = batch * arch.hidden * activation_bytes(arch)
        link = hw.link_bandwidth.value if hw.link_bandwidth is not None else bandwidth(hw) / 10
        step += 2 * arch.layers * (ALLREDUCE_LATENCY + message / link)
    return step


def forward_seconds(
    arch: Arch, hw: Hardware, quantize: str, batch: int, seq: int, tp: int = 1
) -> float:
    compute = forward_flops(arch, batch, seq) / peak_flops(hw, quantize, arch.dtype) / tp
    memory = decode_weight_bytes(arch, quantize, batch * seq) / tp / stream_bandwidth(hw)
    return max(compute, memory)


def request_seconds(
    arch: Arch, hw: Hardware, quantize: str, batch: int, seq: int, tp: int = 1
) -> float:
    """Latency of one batch at the longest allowed input (an upper bound for any percentile):
    a forward pass for encoders, prefill plus GENERATED_TOKENS decode steps for decoders."""
    prefill = forward_seconds(arch, hw, quantize, batch, seq, tp)
    if not arch.decoder:
        return prefill
    step = decode_step_seconds(arch, hw, quantize, batch, seq, tp)
    return prefill + GENERATED_TOKENS * (step + step_overhead(arch, hw))


def step_overhead(arch: Arch, hw: Hardware) -> float:
    """Per-token framework overhead of a CPU decode step (Python, `generate`, kernel launch):
    measured by benchmarks/cost_model.py as about 0.6 ms + 0.22 ms per layer on this 2-core
    machine; budgeted as 0.5 ms + 0.25 ms per layer. Not measured on GPUs (0 there)."""
    return 0.5e-3 + 0.25e-3 * arch.layers if hw.kind == "cpu" else 0.0


def throughput(
    arch: Arch,
    hw: Hardware,
    quantize: str,
    batch: int,
    seq: int,
    replicas: int,
    tokens: bool,
    tp: int = 1,
) -> float:
    """Requests (or generated tokens) per second across replicas."""
    per_second = replicas * batch / request_seconds(arch, hw, quantize, batch, seq, tp)
    return per_second * GENERATED_TOKENS if tokens and arch.decoder else per_second


def cost_per_hour(hw: Hardware, replicas: int) -> float:
    price = hw.cost.value if hw.cost is not None else 0.0
    return replicas * (hw.devices or 1) * price

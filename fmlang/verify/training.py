"""Training memory per device, term by term.

What one device holds at the peak of a training run, for every knob that moves it. Each
term is a function of the base model's architecture facts (`std.models`), the knobs and the
device count, derived from what the frameworks allocate (torch autograd's saved tensors,
`torch.optim`, peft, bitsandbytes, ZeRO/FSDP), not fitted to measured runs. Bytes
throughout; `T` is the tokens in one micro-batch (batch x seq), `h` the hidden size, `i`
the feed-forward width, `V` the vocabulary.

Phases, each a peak of its own; the device's peak is the largest:

- **backward**: persistent state (weights, trainable weights, optimizer state) plus the
  activations saved by the forward pass and the loss's buffers (`logits`), plus the first
  gradients written (the output head's) -- or, later in the backward pass, once the
  activations are freed, every gradient.
- **optimizer step**: persistent state, every gradient, and the optimizer's temporaries
  (torch's foreach AdamW keeps one parameter-sized list, `exp_avg_sq_sqrt`; the fused and
  the bitsandbytes kernels keep none).
- **evaluation**: persistent state plus an evaluation forward pass (no saved activations)
  and, when evaluation generates, the KV cache.
- **load**: the weights while they load (bitsandbytes quantizes each 16-bit tensor after it
  lands on the device, so the largest such tensor is briefly there twice).

Device-wide additions: the caching allocator's reserve above the allocated peak, and the
CUDA context with the libraries' workspaces, which live outside torch's allocator.
Paged optimizer state (`paged_adamw_8bit`) lives in CUDA unified memory, which the driver
pages out to the host under pressure: it is reported as a host term, not a device term.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fmlang.verify.costmodel import Arch, adapter_params, matmul_params, module_shapes

DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}

# Bytes per weight of a quantized linear layer (the other weights stay in 16-bit):
# - nf4/fp4 (bitsandbytes Linear4bit): 4-bit codes + one fp32 absmax per 64-weight block
#   = 0.5 + 4/64; with double quantization the absmax is an 8-bit code with one fp32
#   constant per 256 blocks: 0.5 + 1/64 + 4/(64*256) (Dettmers et al. 2023, QLoRA, §2).
# - int8 (LLM.int8, bitsandbytes Linear8bitLt): 1 byte + one fp32 scale per output row,
#   written here per weight as 4/d_in (d_in >= 1024 in every layer that matters: < 0.4%).
# - gptq/awq: 4-bit codes, one fp16 scale and one packed 4-bit zero point per group of 128
#   input weights: 0.5 + (2 + 0.5)/128.
QUANT_BYTES = {
    "nf4": 0.5 + 4 / 64,
    "fp4": 0.5 + 4 / 64,
    "nf4+dq": 0.5 + 1 / 64 + 4 / (64 * 256),
    "fp4+dq": 0.5 + 1 / 64 + 4 / (64 * 256),
    "int8": 1.0 + 4 / 1024,
    "gptq": 0.5 + 2.5 / 128,
    "awq": 0.5 + 2.5 / 128,
}

# Optimizer state bytes per trainable parameter of dtype bytes `b`:
# torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype (2b); bitsandbytes'
# 8-bit Adam keeps both as 8-bit blockwise codes with one fp32 absmax per 256 values, for
# tensors of at least 4096 elements (smaller ones stay 32-bit: `min_8bit_size`); SGD with
# transformers' defaults (momentum 0) keeps nothing; Adafactor (transformers) keeps factored
# second moments (rows + columns, fp32) and no first moment (beta1 None).
EIGHT_BIT_STATE = 2 * (1 + 4 / 256)
MIN_8BIT_SIZE = 4096
CHUNKS = 8  # chunked cross-entropy splits the sequence in 8 (torchtune's default)

# The caching allocator rounds large blocks to 2 MiB and keeps freed blocks cached: reserved
# memory runs above the allocated peak. ALLOCATOR_RESERVE is that gap as a fraction of the
# memory that is allocated and freed every step (activations, loss buffers, gradients,
# optimizer temporaries): 0.04 to 0.22 across the 34 training runs measured on an H200 with
# torch 2.11 (benchmarks/memory_sweep.py, benchmarks/results/h200_memory_sweep.json), about
# 0.10 in the median. CUDA_CONTEXT is the device memory outside torch's allocator (the
# context, cuBLAS workspaces): 0.75 GiB in every one of those runs (mem_get_info's used
# memory minus torch's reserved memory).
ALLOCATOR_RESERVE = 0.10
CUDA_CONTEXT = 0.75 * 2**30

GIB = 2.0**30


@dataclass(frozen=True)
class TrainSetup:
    """Every knob that moves training memory, with the executor's defaults (transformers
    `Trainer` + peft; see docs/reference.md §9 "Training knobs")."""

    adapter: str = "lora"  # lora | dora | ia3 | prefix | prompt | full
    rank: int = 8
    targets: tuple[str, ...] = ()
    feedforward: tuple[str, ...] = ()
    virtual_tokens: int = 20
    density: float = 0.0  # fisher_mask: fraction of the base's parameters that train
    batch: int = 8
    seq: int = 512
    task: str = "generate"  # generate | classify | embed
    classes: int = 2
    precision: str = "bf16"  # compute dtype (autocast when weights are fp32)
    weights_dtype: str = "bf16"  # dtype the base weights are loaded in
    master_weights: str = "fp32"  # fp32: trainable weights kept in fp32; none: weights dtype
    quantize: str = "none"
    double_quant: bool = False
    optimizer: str = "adamw"
    optimizer_in_backward: bool = False
    checkpointing: str = "off"  # off | selective | full | offload
    attention: str = "sdpa"  # eager | sdpa | flash
    chunked_loss: bool = False
    packing: bool = False
    devices: int = 1
    sharding: str = "ddp"  # ddp | zero1 | zero2 | zero3 | fsdp
    offload: str = "none"  # none | optimizer | parameters
    evaluate: bool = False  # the run evaluates (a forward pass per eval batch) after training
    eval_batch: int = 0  # 0: the training batch
    eval_new_tokens: int = 0
    gpu: bool = True

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def full(self) -> bool:
        return self.adapter == "full"

    @property
    def sparse(self) -> bool:
        """FishMask: `density` of the base's own weights train, through a mask."""
        return self.adapter == "fisher_mask"

    @property
    def compute_bytes(self) -> float:
        return DTYPE_BYTES[self.precision]

    @property
    def trainable_bytes(self) -> float:
        """Bytes of one trainable parameter (and of its gradient)."""
        return 4.0 if self.master_weights == "fp32" else DTYPE_BYTES[self.weights_dtype]

    @property
    def shards_weights(self) -> bool:
        return self.devices > 1 and self.sharding in ("zero3", "fsdp")

    @property
    def shards_gradients(self) -> bool:
        return self.devices > 1 and self.sharding in ("zero2", "zero3", "fsdp")

    @property
    def shards_optimizer(self) -> bool:
        return self.devices > 1 and self.sharding != "ddp"


@dataclass
class Breakdown:
    """Per-device terms (bytes), the phase peaks they add up to, and host-memory terms."""

    terms: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    host: dict[str, float] = field(default_factory=dict)

    @property
    def allocated(self) -> float:
        """The allocated peak: the largest phase."""
        return max(self.phases.values())

    @property
    def peak(self) -> float:
        """Device memory in use at the peak: allocated + allocator reserve + CUDA context."""
        return self.allocated + self.terms.get("allocator", 0.0) + self.terms.get("context", 0.0)

    def phase(self) -> str:
        return max(self.phases, key=lambda name: self.phases[name])


# ---- parameters --------------------------------------------------------------------


def embedding_params(arch: Arch) -> float:
    """Input embeddings (tokens, and positions for encoders) plus an untied output head."""
    table = arch.vocab * arch.hidden
    positions = 0 if arch.decoder else arch.max_seq * arch.hidden
    head = arch.vocab * arch.hidden if arch.decoder and not arch.tied else 0
    return table + positions + head


def block_linear_params(arch: Arch) -> float:
    """The weights of every transformer block's linear layers (what quantization converts):
    attention projections plus the feed-forward layers, times the experts of an MoE."""
    h, q, kv = arch.hidden, arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    attention = h * q * 2 + h * kv * 2
    mlp = (3 if arch.gated else 2) * h * arch.intermediate * arch.experts
    return arch.layers * (attention + mlp)


def frozen_params(arch: Arch, setup: TrainSetup) -> float:
    return 0.0 if setup.full else float(arch.params)


def trainable_params(arch: Arch, setup: TrainSetup) -> float:
    return float(
        adapter_params(
            arch,
            setup.adapter,
            setup.rank,
            setup.targets,
            setup.virtual_tokens,
            setup.feedforward,
            density=setup.density,
        )
    )


def largest_tensor(arch: Arch, setup: TrainSetup) -> float:
    """Elements of the largest trainable tensor (the gradient alive alone when the optimizer
    steps in the backward pass)."""
    if setup.full or setup.sparse:
        widest = max(arch.intermediate, arch.heads * arch.head_dim)
        return float(max(arch.vocab * arch.hidden, arch.hidden * widest))
    shapes = [s for t in setup.targets for s in module_shapes(arch, t)] or [(arch.hidden, 1)]
    return float(max(max(d_in, d_out) * setup.rank for d_in, d_out in shapes))


def weights(arch: Arch, setup: TrainSetup) -> float:
    """Frozen weights as stored: quantized linear layers at QUANT_BYTES, the rest (embeddings,
    head, norms) in the weights dtype; sharded over devices by ZeRO-3/FSDP."""
    frozen = frozen_params(arch, setup)
    if frozen == 0:
        return 0.0
    stored = DTYPE_BYTES[setup.weights_dtype]
    if setup.quantize != "none":
        key = setup.quantize + ("+dq" if setup.double_quant else "")
        linear = min(block_linear_params(arch), frozen)
        total = linear * QUANT_BYTES.get(key, QUANT_BYTES[setup.quantize])
        total += (frozen - linear) * DTYPE_BYTES["bf16" if stored < 4 else "fp32"]
    else:
        total = frozen * stored
    if setup.offload == "parameters":
        return 0.0
    return total / setup.devices if setup.shards_weights else total


def gathered_layers(arch: Arch, setup: TrainSetup) -> float:
    """ZeRO-3/FSDP all-gathers one block's weights to compute it and prefetches the next:
    two unsharded blocks as they are stored (quantized blocks stay quantized; others in the
    compute dtype); with parameters offloaded, the same."""
    if not (setup.shards_weights or setup.offload == "parameters"):
        return 0.0
    per_layer = (arch.params - embedding_params(arch)) / arch.layers
    stored = setup.compute_bytes
    if setup.quantize != "none" and not setup.full:
        key = setup.quantize + ("+dq" if setup.double_quant else "")
        stored = QUANT_BYTES.get(key, QUANT_BYTES[setup.quantize])
    return 2 * per_layer * stored


def trainable(arch: Arch, setup: TrainSetup) -> float:
    if setup.offload == "parameters":
        return 0.0
    total = trainable_params(arch, setup) * setup.trainable_bytes
    return total / setup.devices if setup.shards_weights else total


def gradients(arch: Arch, setup: TrainSetup) -> float:
    """One gradient per trainable weight, in its dtype; only the largest tensor's when the
    optimizer steps in the backward pass; sharded by ZeRO-2/3; DDP adds its reduction
    buckets (a second gradient-sized buffer: `gradient_as_bucket_view` is off by default)."""
    if setup.optimizer_in_backward:
        return largest_tensor(arch, setup) * setup.trainable_bytes
    if setup.offload == "parameters":
        return 0.0
    total = trainable_params(arch, setup) * setup.trainable_bytes
    if setup.sparse:  # each masked tensor's full gradient exists before its k_t are gathered
        total += largest_tensor(arch, setup) * DTYPE_BYTES[setup.weights_dtype]
    if setup.shards_gradients:
        return total / setup.devices
    buckets = total if setup.devices > 1 else 0.0
    return total + buckets


def optimizer_state(arch: Arch, setup: TrainSetup) -> float:
    """Optimizer state on the device (host-resident state is `host_optimizer`)."""
    if setup.offload != "none" or setup.optimizer == "paged_adamw_8bit":
        return 0.0
    total = optimizer_bytes(arch, setup)
    return total / setup.devices if setup.shards_optimizer else total


def optimizer_bytes(arch: Arch, setup: TrainSetup) -> float:
    n = trainable_params(arch, setup)
    b = setup.trainable_bytes
    if setup.optimizer in ("adamw", "adamw_fused"):
        return n * 2 * b
    if setup.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        small = largest_tensor(arch, setup) < MIN_8BIT_SIZE
        return n * (8.0 if small else EIGHT_BIT_STATE)
    if setup.optimizer == "adafactor":
        return 4.0 * factored_size(arch, setup)
    return 0.0  # sgd


def factored_size(arch: Arch, setup: TrainSetup) -> float:
    """Adafactor's row and column statistics: rows + columns of every trainable matrix."""
    if setup.full:
        h, widest = arch.hidden, arch.intermediate
        per_layer = 8 * h + 3 * (h + widest)
        return arch.layers * per_layer + arch.vocab + h
    shapes = [s for t in setup.targets for s in module_shapes(arch, t)]
    return arch.layers * sum(2 * setup.rank + d_in + d_out for d_in, d_out in shapes)


def optimizer_temporaries(arch: Arch, setup: TrainSetup) -> float:
    """torch's foreach AdamW allocates one parameter-sized list (`exp_avg_sq_sqrt`) while it
    steps; the fused kernel, bitsandbytes and SGD without momentum allocate none."""
    if setup.optimizer != "adamw" or setup.optimizer_in_backward or setup.offload != "none":
        return 0.0
    total = trainable_params(arch, setup) * setup.trainable_bytes
    return total / setup.devices if setup.shards_optimizer else total


# ---- activations -------------------------------------------------------------------


def saves_input(arch: Arch, setup: TrainSetup, module: str) -> bool:
    """A linear layer keeps its input for the backward pass only when its weight trains
    (full fine-tuning) or an adapter wraps it (LoRA's A needs x)."""
    if setup.full or setup.sparse:  # FishMask: every weight may hold masked entries
        return True
    return module in setup.targets and setup.adapter in ("lora", "dora", "ia3")


def layer_activations(arch: Arch, setup: TrainSetup) -> float:
    """Bytes one transformer block saves for its backward pass at T tokens."""
    per_token = _decoder_block(arch, setup) if arch.decoder else _encoder_block(arch, setup)
    per_token += _adapter_intermediates(arch, setup)
    return setup.tokens * per_token + _attention_scores(arch, setup)


def _decoder_block(arch: Arch, setup: TrainSetup) -> float:
    """Per token, a pre-norm decoder block (Llama, Mistral, Qwen; GPT-2 with `mlp plain`):
    - each RMSNorm upcasts its input to fp32 and keeps that copy (4h), and with a
      trainable norm weight also the normalised 16-bit input (p h);
    - q/k/v keep the norm's output (p h) when one of them saves its input;
    - attention (sdpa/flash) keeps q, k, v and its output (p (2q + 2kv)); o_proj keeps its
      own contiguous copy of the output (p q) when it saves;
    - the MLP keeps the gate pre-activation for SiLU (p i), SiLU's output and up's output
      for their product (2 p i), and down's input (p i) when it saves; a plain MLP keeps
      the pre-activation (p i) and, when down saves, the activation (p i); an MoE routes
      each token through `experts_per_token` experts, with a gathered copy of its input.
    """
    h, i, p = arch.hidden, arch.intermediate, setup.compute_bytes
    q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    norm = 4 * h + (p * h if setup.full else 0)
    qkv_names = ("q_proj", "k_proj", "v_proj", "c_attn", "query_key_value", "qkv_proj")
    o_names = ("o_proj", "c_proj", "dense")
    total = 2 * norm
    if any(saves_input(arch, setup, m) for m in qkv_names):
        total += p * h
    total += p * (2 * q + 2 * kv)
    if any(saves_input(arch, setup, m) for m in o_names):
        total += p * q
    up_names = ("gate_proj", "up_proj", "gate_up_proj", "c_fc", "dense_h_to_4h", "w1", "w3")
    down_names = ("down_proj", "c_proj", "dense_4h_to_h", "w2")
    routed = arch.experts_per_token if arch.experts > 1 else 1
    mlp = (3 * p * i) if arch.gated else (p * i)
    if any(saves_input(arch, setup, m) for m in down_names):
        mlp += p * i
    if any(saves_input(arch, setup, m) for m in up_names):
        total += p * h
    if arch.experts > 1:
        mlp += p * h  # the token's hidden state gathered for its expert
    return total + routed * mlp


def _encoder_block(arch: Arch, setup: TrainSetup) -> float:
    """Per token, a post-norm BERT block: q/k/v keep their input (p h) when one of them
    saves, attention keeps q, k, v and its output (4 p h), the attention output dense keeps
    its input (p h) when it saves, two dropouts keep a 1-byte mask each (2h), two
    LayerNorms keep their inputs (2 p h), GELU keeps its input (p i) and the output dense
    its input (p i) when it saves (`dense` names all three dense layers in BERT)."""
    h, i, p = arch.hidden, arch.intermediate, setup.compute_bytes
    total = 4 * p * h + 2 * h + 2 * p * h + p * i
    if any(saves_input(arch, setup, m) for m in ("query", "key", "value")):
        total += p * h
    if saves_input(arch, setup, "dense"):
        total += p * h + p * h + p * i  # attention output, intermediate and output dense
    return total


def _adapter_intermediates(arch: Arch, setup: TrainSetup) -> float:
    """LoRA's B keeps A's output (rank values per token) for each wrapped layer."""
    if setup.adapter not in ("lora", "dora"):
        return 0.0
    shapes = [s for t in setup.targets if t != "lm_head" for s in module_shapes(arch, t)]
    return len(shapes) * setup.rank * setup.compute_bytes


def _attention_scores(arch: Arch, setup: TrainSetup) -> float:
    """The batch x heads x seq^2 tensors attention keeps, per block.

    - `eager` keeps the softmax output (fp32, upcast as transformers does) and its 16-bit
      copy for the product with v; with attention dropout (encoders) also the dropout mask
      (a bool on CUDA, a noise tensor of the activation dtype on CPU) and the dropped
      probabilities.
    - `sdpa`/`flash` keep only a per-row log-sum-exp (4 bytes per head and token) when a
      fused kernel runs. torch falls back to its math kernel, which keeps the softmax like
      eager, for fp32 with grouped KV heads on CUDA (flash needs 16-bit; the memory-efficient
      kernel has no grouped-query path) and for dropout on CPU.
    - 16-bit encoders on CUDA (padding mask and attention dropout, memory-efficient kernel)
      keep one byte per score: measured on an H200 with torch 2.11 (benchmarks/memory_sweep.py,
      bert-large rows: 2.6 GiB beyond the derived terms in bf16, none in fp32), not derived.
    """
    b, a, s = setup.batch, arch.heads, setup.seq
    scores = b * a * s * s
    p = setup.compute_bytes
    mask = 1.0 if setup.gpu else p  # CUDA's dropout keeps a bool mask, CPU's a noise tensor
    dropout = 0.0 if arch.decoder else mask + p
    softmax = 4 + (0.0 if setup.precision == "fp32" else p) + dropout
    if setup.attention == "eager" or _math_kernel(arch, setup):
        return scores * softmax
    if not arch.decoder and setup.gpu and setup.precision != "fp32":
        return scores * 1.0 + 4.0 * b * a * s
    return 4.0 * b * a * s


def _math_kernel(arch: Arch, setup: TrainSetup) -> bool:
    grouped = arch.kv_heads < arch.heads
    if setup.gpu:
        return setup.precision == "fp32" and grouped
    return not arch.decoder  # CPU: attention dropout takes the math path


def autocast_copies(arch: Arch, setup: TrainSetup) -> float:
    """Mixed precision over fp32 weights (autocast): every matrix multiply runs on a 16-bit
    copy of its weight, and autograd keeps that copy for the input's gradient until the
    backward pass: 2 bytes per weight that multiplies activations (embedding lookups
    excluded, a tied output head included)."""
    if setup.weights_dtype != "fp32" or setup.precision == "fp32":
        return 0.0
    return matmul_params(arch) * 2.0


def masked_copies(arch: Arch, setup: TrainSetup) -> float:
    """FishMask runs its forward pass on `base + scatter(delta)`: a copy of every tensor with
    a masked entry, which autograd keeps for the input's gradient until the backward pass
    (bounded here by every base weight: a global top-k touches nearly every tensor)."""
    return arch.params * DTYPE_BYTES[setup.weights_dtype] if setup.sparse else 0.0


def layer_input(arch: Arch, setup: TrainSetup) -> float:
    """What a checkpointed block keeps: its input hidden states."""
    return setup.tokens * arch.hidden * setup.compute_bytes


def activations(arch: Arch, setup: TrainSetup) -> float:
    """Saved activations of all blocks under the checkpointing policy: `off` keeps every
    block's; `full` keeps each block's input and recomputes one block at a time;
    `selective` checkpoints every second block; `offload` moves the checkpoints to host
    memory, keeping two in flight."""
    layer, kept, n = layer_activations(arch, setup), layer_input(arch, setup), arch.layers
    embedding = setup.tokens * arch.hidden * (4.0 if not arch.decoder else 0.0)
    embedding += autocast_copies(arch, setup) + masked_copies(arch, setup)
    if setup.checkpointing == "full":
        return n * kept + layer + embedding
    if setup.checkpointing == "selective":
        checkpointed = n // 2
        return (n - checkpointed) * layer + checkpointed * kept + layer + embedding
    if setup.checkpointing == "offload":
        return 2 * kept + layer + embedding
    return n * layer + embedding + _final_norm(arch, setup)


def _final_norm(arch: Arch, setup: TrainSetup) -> float:
    if not arch.decoder:
        return 0.0
    head_saves = setup.full or "lm_head" in setup.targets
    per_token = 4 * arch.hidden + (setup.compute_bytes * arch.hidden if head_saves else 0)
    return setup.tokens * per_token


def logits(arch: Arch, setup: TrainSetup) -> float:
    """The loss's buffers at their peak, for a causal LM (T x V values each):
    transformers upcasts the 16-bit logits to fp32 (a transient copy) and cross-entropy's
    log_softmax keeps its fp32 output (4 TV); the backward pass then holds the incoming
    gradient and log_softmax's input gradient (8 TV) beside that output: 12 TV at any
    precision. Chunked (the executor's `chunked_loss`, as torchtune's CEWithChunkedOutputLoss
    computes it): each chunk's fp32 log_softmax output stays (4 TV in all) and one chunk's
    16-bit logits with their fp32 copy, or its two gradients, exist at a time
    (max(p + 4, 8) TV / CHUNKS). Classifiers: b x classes."""
    if not arch.decoder or setup.task != "generate":
        return setup.batch * setup.classes * 12.0
    tv = setup.tokens * arch.vocab
    if setup.chunked_loss:
        return tv * (4 + max(setup.compute_bytes + 4, 8) / CHUNKS)
    return 12.0 * tv


def head_gradient(arch: Arch, setup: TrainSetup) -> float:
    """The first gradient the backward pass writes: the output head's, when it trains."""
    if setup.full and arch.decoder:
        return arch.vocab * arch.hidden * setup.trainable_bytes
    return 0.0


# ---- evaluation and loading ---------------------------------------------------------


def evaluation(arch: Arch, setup: TrainSetup) -> float:
    """An evaluation forward pass: no saved activations, one block's transients (its
    feed-forward intermediates) and the loss buffers without gradients (T x V x 8: the
    logits and log_softmax's output); generation adds the KV cache for prompt + new
    tokens. At the evaluation batch."""
    batch = setup.eval_batch or setup.batch
    p = setup.compute_bytes
    tokens = batch * setup.seq
    transient = tokens * (2 * arch.intermediate + 4 * arch.hidden) * p
    if arch.decoder and setup.task == "generate":
        if setup.eval_new_tokens:
            context = setup.seq + setup.eval_new_tokens
            kv = batch * context * arch.layers * 2 * arch.kv_heads * arch.head_dim * p
            return transient + kv + batch * arch.vocab * 4 * 2
        return transient + tokens * arch.vocab * (p + 4 + 4)
    return transient


def fisher_estimate(arch: Arch, setup: TrainSetup) -> float:
    """FishMask's Fisher estimate, before training: the weights, an fp32 accumulator and a
    gradient for every base parameter, and one row's saved activations (it backpropagates
    one row at a time)."""
    per_row = replace(setup, batch=1, adapter="full")  # the model itself, no masked copies
    grads = arch.params * DTYPE_BYTES[setup.weights_dtype]
    return weights(arch, setup) + arch.params * 4.0 + grads + activations(arch, per_row)


def load_transient(arch: Arch, setup: TrainSetup) -> float:
    """bitsandbytes quantizes each weight after it lands in 16-bit: the largest linear
    weight (the MLP's, or an expert's) is briefly there twice."""
    if setup.quantize == "none" or setup.full:
        return 0.0
    return arch.hidden * arch.intermediate * 2.0


# ---- host ----------------------------------------------------------------------------


def host_terms(arch: Arch, setup: TrainSetup) -> dict[str, float]:
    """Host memory the run needs beyond the processes themselves, over all devices (one
    node's share is this divided by the nodes). transformers loads safetensors shard by
    shard straight to the device; under FSDP/ZeRO-3 (`cpu_ram_efficient_loading`) rank 0
    reads the whole checkpoint into host memory before sharding it."""
    host: dict[str, float] = {}
    if setup.shards_weights:
        host["load"] = arch.params * DTYPE_BYTES[setup.weights_dtype]
    n = trainable_params(arch, setup)
    if setup.offload in ("optimizer", "parameters"):
        # ZeRO-Offload / FSDP CPU offload keep fp32 master weights and the optimizer state.
        host["optimizer"] = optimizer_bytes(arch, replace(setup, master_weights="fp32")) + 4 * n
    if setup.offload == "parameters":
        host["parameters"] = frozen_params(arch, setup) * DTYPE_BYTES[setup.weights_dtype]
        host["gradients"] = n * 4.0
    if setup.optimizer == "paged_adamw_8bit":
        host["paged optimizer"] = optimizer_bytes(arch, setup)
    if setup.checkpointing == "offload":
        host["activations"] = arch.layers * layer_input(arch, setup) * setup.devices
    return host


# ---- the whole ------------------------------------------------------------------------


def breakdown(arch: Arch, setup: TrainSetup) -> Breakdown:
    """Every term per device, the phase peaks and the host terms."""
    t = {
        "weights": weights(arch, setup),
        "gathered layers": gathered_layers(arch, setup),
        "trainable": trainable(arch, setup),
        "optimizer": optimizer_state(arch, setup),
        "gradients": gradients(arch, setup),
        "activations": activations(arch, setup),
        "logits": logits(arch, setup),
        "optimizer temporaries": optimizer_temporaries(arch, setup),
        "evaluation": evaluation(arch, setup) if setup.evaluate else 0.0,
        "load": load_transient(arch, setup),
    }
    persistent = t["weights"] + t["gathered layers"] + t["trainable"] + t["optimizer"]
    grads = t["gradients"]
    forward = t["activations"] + t["logits"] + head_gradient(arch, setup)
    phases = {
        "backward": persistent + max(forward, grads),
        "optimizer step": persistent + grads + t["optimizer temporaries"],
        "evaluation": persistent + t["evaluation"],
        "load": t["weights"] + t["load"],
    }
    if setup.sparse:
        phases["fisher"] = fisher_estimate(arch, setup)
    churn = max(forward, grads + t["optimizer temporaries"], t["evaluation"])
    t["allocator"] = ALLOCATOR_RESERVE * churn if setup.gpu else 0.0
    t["context"] = CUDA_CONTEXT if setup.gpu else 0.0
    return Breakdown(terms=t, phases=phases, host=host_terms(arch, setup))

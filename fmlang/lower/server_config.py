"""What a deployment serves, resolved from the IR and the solver's knobs, and the runtime
settings built from it: the `fmc serve` configuration (`deploy/<deploy>/server.json`) and
vLLM's options (engine, LoRA), with the FM10xx checks of what vLLM cannot serve.

`resolve_served` turns a `deploy` block into a `ServedModel`: the base model and its weights,
the task, the adapters with their paths relative to the build folder, and every serving
setting (batch, resident adapters, context length, quantization, adapter rank) with the value
the solver chose (`knobs`, keys as in `verify.json`: `<target>.serve_batch`,
`<target>.max_adapters`, `<deploy or model>.max_seq`, `<model>.quantize`, `<model>.rank`).
A setting the spec fixed is taken from the IR when the knobs do not list it; a setting left
`auto` that no solver chose is an error (FM1036), never a guess.

Paths, when the caller passes no `adapters` mapping (`default_adapters`):
- a model's trained adapter:   `run/models/<model>/adapter`
- a merge's merged adapter:    `run/merges/<merge>/adapter`
- weights merged into the base (`adapters merged`): `run/merges/<merge>/model` for a merge,
  `run/models/<model>/merged` for a model. server.json names them with weights kind
  `build` (a folder relative to the build folder).
- `local(...)` base weights: `weights/<base model>`, where the user copies the folder the
  spec names (server.json never carries a path of the machine that built it).

`adapters` left unspecified in the spec means `dynamic` (adapters loaded on demand).

server.json also says who may query the endpoint (`query_principals`: the principals the
access model admits to `query:<deploy>`, the same answer `fmc check` reports from) and its
`visibility` (`internal` unless the spec says `public`), so that `fmc serve --config`
enforces what the spec grants without the spec (fmlang/backends/serve/auth.py). API keys
never appear in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fmlang.diagnostics import Span, error
from fmlang.errors import StageError
from fmlang.ir.base import Knob
from fmlang.ir.nodes import Deployment, DeployTarget, Merge, Model, PretrainedModel, Spec
from fmlang.verify import costmodel as cm
from fmlang.verify.access import AccessModel
from fmlang.verify.costmodel import GENERATED_TOKENS
from fmlang.verify.resources import DEFAULT_SERVING_SEQ

DEFAULT_HOST = "127.0.0.1"  # `fmc serve` binds to loopback unless the spec says otherwise
DEFAULT_PORT = 8080
# Requests waiting beyond the running batch before the server turns new ones away.
DEFAULT_MAX_QUEUE = 64
LORA_KINDS = ("lora", "dora")  # adapter kinds with a rank
VLLM_PORT = 8000  # the vllm-openai image's default port
ADAPTER_FILE_BYTES = 4  # per adapter parameter: peft keeps (and saves) adapters in fp32
MOUNT = "/mnt/models"  # where containers see the build folder (KServe's model mount)
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig accepts these
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# vLLM quantizes bf16/fp16 weights as it loads them: bitsandbytes NF4 (4-bit) and FP8
# weights (1 byte per weight, the footprint the cost model budgets for int8).
VLLM_QUANTIZATION = {"nf4": "bitsandbytes", "int8": "fp8"}


@dataclass(frozen=True)
class ServedModel:
    """Everything the manifests and server.json say about one deployment."""

    deploy: str
    target: str  # the model or merge served
    target_kind: str  # "model" or "merge"
    base: PretrainedModel
    task: str  # classify, generate or embed
    classes: tuple[str, ...]
    adapter_kind: str | None  # lora, dora, ia3, ... or None without an adapter
    rank: int | None  # the served adapter's rank (cat merges sum their ranks)
    merged: bool  # adapters merged into the base weights
    adapters: tuple[tuple[str, str], ...]  # (name, path relative to the build folder)
    merged_path: str | None  # the merged weights' folder when `merged`
    quantize: str
    max_seq: int
    batch: int
    max_adapters: int
    span: Span | None
    memory_bytes: float | None = None  # the cost model's footprint of one replica
    artifact_bytes: float | None = None  # what the server reads from the build folder
    # Who may query it (the access model's `query:<deploy>`) and who can reach it.
    query_principals: tuple[str, ...] = ()
    visibility: str | None = None
    # A model that selects its base (`base auto in [...]`): each candidate `fmc run` may pick
    # (`m+c`, its base). `base` and the sizes are then the worst case over them, and
    # `fmc serve` loads the base of the candidate the registry's `selected` pointer names.
    candidates: tuple[tuple[str, PretrainedModel], ...] = ()

    def with_memory(self, model: Model) -> ServedModel:
        """The same, with the cost model's serving footprint (the formula the verifier's
        memory constraint uses: weights, resident adapters, KV cache, activations) and the
        size of the files it reads from the build folder (adapters saved in fp32; merged or
        `local(...)` base weights at the base model's dtype)."""
        if not self.base.params:
            return self
        arch = cm.Arch.of(self.base)
        adapter = model.adapter
        params = 0
        if adapter is not None and not self.merged:
            params = cm.adapter_params(
                arch, adapter.kind, self.rank or 0, adapter.targets, feedforward=adapter.feedforward
            )
        footprint = cm.serving_memory(
            arch, self.quantize, params * cm.activation_bytes(arch), self.max_adapters,
            self.batch, self.max_seq,
        )  # fmt: skip
        weights = self.base.weights
        in_build = self.merged or (weights is not None and weights.kind == "local")
        files = float(params * ADAPTER_FILE_BYTES * len(self.adapters))
        files += cm.weight_bytes(arch, "none") if in_build else 0.0
        return replace(self, memory_bytes=footprint, artifact_bytes=files)

    @property
    def generative(self) -> bool:
        return self.task == "generate"

    @property
    def max_new_tokens(self) -> int:
        """New tokens per generate request: the figure the verifier's latency estimate
        assumed, but at most half the context so a prompt always fits (classifiers
        generate none and ignore it)."""
        return max(1, min(GENERATED_TOKENS, self.max_seq // 2))


def _span(deployment: Deployment) -> Span | None:
    return deployment.span.to_span() if deployment.span else None


def _sources(spec: Spec, deployment: Deployment) -> tuple[list[Model], Merge | None]:
    merge = spec.merge(deployment.target)
    names = list(merge.models) if merge else [deployment.target]
    models = [m for m in (spec.model(n) for n in names) if m is not None]
    if not models or len(models) != len(names):
        raise StageError(
            error(
                "FM1037",
                f"deployment `{deployment.name}` serves `{deployment.target}`, which is not a "
                "model or a merge of models in this spec",
                _span(deployment),
                "nothing to serve",
                help="name a `model` or `merge` block of this spec after `deploy`",
            )
        )
    return models, merge


def _base(spec: Spec, deployment: Deployment, model: Model) -> PretrainedModel:
    base = spec.base_model(model.base) if model.base else None
    if base is None:
        raise StageError(
            error(
                "FM1037",
                f"model `{model.name}` served by `{deployment.name}` names no known base model",
                _span(deployment),
                "no base model to serve",
                help="give the model a `base` from `std.models` or a `base_model` block",
            )
        )
    return base


def knob_value(
    knobs: Mapping[str, int | str],
    keys: tuple[str, ...],
    knob: Knob | None,
    default: int | str,
    span: Span | None,
) -> int | str:
    """The solver's value under the first key present, else the value the spec fixed, else
    `default` when the spec does not mention the setting."""
    for key in keys:
        if key in knobs:
            return knobs[key]
    if knob is None:
        return default
    if knob.fixed is not None and not knob.auto:
        return knob.fixed if isinstance(knob.fixed, str) else int(knob.fixed)
    raise StageError(
        error(
            "FM1036",
            f"`{keys[0]}` is left `auto` but no solver chose a value for it",
            span,
            "chosen by the verifier",
            help="build with verification on (the default) or write a value instead of `auto`",
        )
    )


def _int(value: int | str) -> int:
    return int(value)


def _rank(knobs: Mapping[str, int | str], models: list[Model], merge: Merge | None) -> int | None:
    ranks: list[int] = []
    for model in models:
        adapter = model.adapter
        if adapter is None or adapter.kind not in LORA_KINDS:
            return None
        span = adapter.span.to_span() if adapter.span else None
        ranks.append(_int(knob_value(knobs, (f"{model.name}.rank",), adapter.rank, 8, span)))
    if merge is not None and merge.method == "cat":
        return sum(ranks)
    return max(ranks)


def default_adapters(spec: Spec, deployment: Deployment) -> dict[str, str]:
    """Where the build folder keeps what `deployment` serves (see the module docstring)."""
    merged = deployment.adapters == "merged"
    is_merge = spec.merge(deployment.target) is not None
    folder = "merges" if is_merge else "models"
    if merged:
        leaf = "model" if is_merge else "merged"
        return {deployment.target: f"run/{folder}/{deployment.target}/{leaf}"}
    model = spec.model(deployment.target)
    if not is_merge and (model is None or not _has_adapter(spec, model)):
        return {}
    return {deployment.target: f"run/{folder}/{deployment.target}/adapter"}


def _has_adapter(spec: Spec, model: Model) -> bool:
    """The model trains an adapter; a selection model when its candidates do (each has one
    from `adapter auto in [...]`, or the model's own)."""
    if model.selection is None:
        return model.adapter is not None
    return any(m.adapter is not None for m in spec.models if m.candidate_of == model.name)


def _max_seq(
    knobs: Mapping[str, int | str],
    deployment: Deployment,
    models: list[Model],
    base: PretrainedModel,
) -> int:
    """The deploy block's `max_seq`, else the model's, else what the verifier budgeted."""
    keys = (f"{deployment.name}.max_seq", *(f"{m.name}.max_seq" for m in models))
    default = min(base.max_seq or DEFAULT_SERVING_SEQ, DEFAULT_SERVING_SEQ)
    knob = deployment.max_seq or models[0].max_seq
    return _int(knob_value(knobs, keys, knob, default, _span(deployment)))


def resolve_served(
    spec: Spec,
    deployment: Deployment,
    knobs: Mapping[str, int | str],
    adapters: Mapping[str, str] | None = None,
) -> ServedModel:
    """The deployment with every setting decided (raises `StageError` when one is not)."""
    selecting = spec.model(deployment.target)
    if selecting is not None and selecting.selection is not None:
        return _resolve_selected(spec, deployment, selecting, knobs, adapters)
    models, merge = _sources(spec, deployment)
    first = models[0]
    base = _base(spec, deployment, first)
    span = _span(deployment)
    paths = dict(default_adapters(spec, deployment) if adapters is None else adapters)
    merged = deployment.adapters == "merged"
    target = deployment.target
    task = first.task
    served = ServedModel(
        deploy=deployment.name, target=target, target_kind="merge" if merge else "model",
        base=base, task=task.kind if task else "generate", classes=task.classes if task else (),
        adapter_kind=first.adapter.kind if first.adapter else None,
        rank=_rank(knobs, models, merge), merged=merged,
        adapters=() if merged else tuple(sorted(paths.items())),
        merged_path=paths.get(target) if merged else None,
        quantize=str(knob_value(knobs, (f"{first.name}.quantize",), first.quantize, "none", span)),
        max_seq=_max_seq(knobs, deployment, models, base),
        batch=_int(knob_value(knobs, (f"{target}.serve_batch",), deployment.batch, 1, span)),
        max_adapters=_int(
            knob_value(knobs, (f"{target}.max_adapters",), deployment.max_adapters, 1, span)
        ),
        span=span,
        query_principals=tuple(sorted(AccessModel(spec).allowed(f"query:{deployment.name}"))),
        visibility=deployment.visibility,
    )  # fmt: skip
    return served.with_memory(first)


def _resolve_selected(
    spec: Spec,
    deployment: Deployment,
    model: Model,
    knobs: Mapping[str, int | str],
    adapters: Mapping[str, str] | None,
) -> ServedModel:
    """A deployment of a model that selects its base: each candidate resolved as if it were
    deployed (the deployment's own knobs, chosen once for all of them by the verifier, are
    keyed by `model`), then the worst case: the largest footprint, the shortest context and
    the largest rank, with every candidate's base listed for `fmc serve` to pick from."""
    candidates = [m for m in spec.models if m.candidate_of == model.name]
    if not candidates:
        raise StageError(
            error(
                "FM0392",
                f"deployment `{deployment.name}` serves `{model.name}`, which has no "
                "candidate left to train",
                _span(deployment),
                "nothing to serve",
                help="`fmc check` says why each candidate was dropped (FM0376, FM0377)",
            )
        )
    paths = dict(default_adapters(spec, deployment) if adapters is None else adapters)
    # each candidate resolved as if deployed itself, with the same files (sized per candidate)
    each = [
        resolve_served(
            spec,
            deployment.model_copy(update={"target": c.name}),
            _aliased(knobs, model.name, c.name),
            dict.fromkeys([c.name] if paths else [], next(iter(paths.values()), "")),
        )
        for c in candidates
    ]
    worst = max(each, key=lambda s: (s.memory_bytes or 0.0, s.base.params or 0))
    merged = deployment.adapters == "merged"
    ranks = [s.rank for s in each]
    return replace(
        worst,
        target=model.name,
        adapters=() if merged else tuple(sorted(paths.items())),
        merged_path=paths.get(model.name) if merged else None,
        rank=None if None in ranks else max(r for r in ranks if r is not None),
        max_seq=min(s.max_seq for s in each),
        artifact_bytes=max((s.artifact_bytes or 0.0 for s in each), default=None),
        candidates=tuple((c.name, s.base) for c, s in zip(candidates, each, strict=True)),
    )


def _aliased(knobs: Mapping[str, int | str], model: str, candidate: str) -> dict[str, int | str]:
    """`knobs` with the selection model's own (`m.serve_batch`, `m.kserve.replicas`) also
    under the candidate's name, where the candidate has none of its own."""
    aliased = dict(knobs)
    for key, value in knobs.items():
        if key.startswith(f"{model}."):
            aliased.setdefault(candidate + key[len(model) :], value)
    return aliased


def serving_memory(constraints: Sequence[Mapping[str, Any]], target: str) -> float | None:
    """The verifier's serving-memory estimate of the model in bytes for `target`, from
    verify.json's constraint rows (`VerifyReport.constraints`); None when no memory
    constraint gave one. A row on a CPU profile also counts the server process
    (`process_bytes`), which is taken out: the container adds its own baseline."""
    for row in constraints:
        if row.get("target") == target and row.get("kind") == "memory":
            estimate = row.get("estimate")
            if isinstance(estimate, int | float) and row.get("unit") == "bytes":
                return float(estimate) - float(row.get("process_bytes") or 0.0)
    return None


def replicas(
    served: ServedModel, target: DeployTarget, knobs: Mapping[str, int | str]
) -> tuple[int, int]:
    """(min, max): a fixed count when the spec or the solver fixed one, else the range."""
    knob = target.replicas
    if knob is None:
        return 1, 1
    if knob.fixed is not None and not knob.auto:
        return int(knob.fixed), int(knob.fixed)
    chosen = knobs.get(f"{served.target}.{target.kind}.replicas")
    if knob.auto and chosen is not None:
        return int(chosen), int(chosen)
    low = int(knob.low) if knob.low is not None else 1
    high = int(knob.high) if knob.high is not None else low
    return low, max(low, high)


def local_weights_path(served: ServedModel) -> str:
    """Where a server started from server.json reads `local(...)` base weights: a folder of
    the build folder, since the spec's folder does not travel with it."""
    return _local_weights(served.base)


def _local_weights(base: PretrainedModel) -> str:
    return f"weights/{base.name}"


def _weights(served: ServedModel) -> dict[str, Any]:
    """The base weights as server.json names them; folders relative to the build folder."""
    if served.merged:
        return {"kind": "build", "location": served.merged_path, "revision": None}
    return _base_weights(served.base)


def _base_weights(base: PretrainedModel) -> dict[str, Any]:
    source = base.weights
    if source is None:
        return {"kind": None, "location": None, "revision": None}
    if source.kind == "local":
        return {"kind": "local", "location": _local_weights(base), "revision": None}
    return {"kind": source.kind, "location": source.location, "revision": source.revision}


def _served_base(served: ServedModel) -> dict[str, Any]:
    """server.json's `base`: the one base, or for a model that selects its base, none yet
    and every candidate's, keyed by the candidate model `fmc serve` finds selected."""
    if not served.candidates or served.merged:
        return {"name": served.base.name, "weights": _weights(served)}
    return {
        "name": None,
        "weights": None,
        "resolved": "at run time: `fmc serve` loads the base of the candidate that `fmc run` "
        f"selected for `{served.target}` (the registry's `selected` pointer)",
        "candidates": {
            name: {"name": base.name, "weights": _base_weights(base)}
            for name, base in served.candidates
        },
    }


def server_config(
    served: ServedModel, host: str | None = None, port: int | None = None
) -> dict[str, Any]:
    """The `fmc serve` configuration: what to load, where to listen and the bounds the
    verifier checked (batch, resident adapters, context)."""
    max_input = served.max_seq - served.max_new_tokens if served.generative else served.max_seq
    return {
        "schema_version": "1",
        "deploy": served.deploy,
        "model": served.target,
        "host": host or DEFAULT_HOST,
        "port": port or DEFAULT_PORT,
        "base": _served_base(served),
        "task": served.task,
        "classes": list(served.classes),
        "adapters": dict(served.adapters),
        "max_batch": served.batch,
        "max_adapters": served.max_adapters,
        "max_input_tokens": max(1, max_input),
        "max_new_tokens": served.max_new_tokens,
        "max_queue": DEFAULT_MAX_QUEUE,
        "query_principals": list(served.query_principals),
        "visibility": served.visibility or "internal",
    }


# ---- vLLM ----------------------------------------------------------------------------


def target_span(target: DeployTarget, served: ServedModel) -> Span | None:
    return target.span.to_span() if target.span else served.span


def fail(code: str, message: str, span: Span | None, label: str, help: str) -> StageError:
    return StageError(error(code, message, span, label, help=help))


def _vllm_problem(served: ServedModel) -> tuple[str, str, str] | None:
    """(code, message, help) of the first thing vLLM cannot serve, or None."""
    weights = served.base.weights
    if served.candidates and not served.merged:
        names = ", ".join(f"`{base.name}`" for _, base in served.candidates)
        return ("FM0393", f"vLLM loads the base model its manifest names, and `{served.target}`"
                f"'s base ({names}) is chosen only when `fmc run` trains the candidates",
                f"deploy `{served.target}` on a CPU profile or `local`ly, where `fmc serve` "
                "loads the selected base when it starts, or pin its base to the winner "
                "`fmc run` names")  # fmt: skip
    if not served.generative:
        return ("FM1033", f"`{served.target}` is a `{served.task}` model; vLLM serves "
                "generative models",
                "deploy it `local`ly or on a CPU profile, where `fmc serve` runs it")  # fmt: skip
    if served.quantize not in ("none", *VLLM_QUANTIZATION):
        return ("FM1032", f"vLLM cannot quantize weights to `{served.quantize}` as it loads them",
                "choose `quantize nf4` or `quantize int8`, or leave the weights as is")  # fmt: skip
    if not served.merged and (weights is None or weights.kind != "hub"):
        kind = f"`{weights.kind}(...)`" if weights else "no"
        return ("FM1031", f"base model `{served.base.name}` has {kind} weights, which a "
                "cluster cannot fetch",
                "give the base model `hub(...)` weights, or serve `adapters merged`")  # fmt: skip
    if served.adapters and served.adapter_kind != "lora":
        return ("FM1030", f"vLLM loads only LoRA adapters on demand; `{served.target}` has a "
                f"`{served.adapter_kind}` adapter",
                "serve it with `adapters merged`, or train a `lora` adapter")  # fmt: skip
    return None


def check_vllm(served: ServedModel, target: DeployTarget) -> None:
    """What vLLM cannot serve, reported before any manifest names it."""
    problem = _vllm_problem(served)
    if problem is not None:
        code, message, help = problem
        where = f"`{target.kind}` on a GPU runs vLLM"
        raise fail(code, message, target_span(target, served), where, help)


def max_lora_rank(served: ServedModel, target: DeployTarget) -> int:
    """The smallest rank vLLM accepts that holds the spec's limit (or the adapter's rank)."""
    wanted = target.max_lora_rank or served.rank or VLLM_MAX_LORA_RANKS[0]
    for rank in VLLM_MAX_LORA_RANKS:
        if rank >= wanted:
            return rank
    raise fail(
        "FM1035",
        f"vLLM serves LoRA adapters up to rank {VLLM_MAX_LORA_RANKS[-1]}; this needs {wanted}",
        target_span(target, served),
        "rank too large for vLLM",
        f"lower the adapter rank or `max_lora_rank` to at most {VLLM_MAX_LORA_RANKS[-1]}",
    )


def lora_args(served: ServedModel, target: DeployTarget) -> list[str]:
    """vLLM's LoRA options; none when the adapters are merged or there are none."""
    if served.merged or not served.adapters:
        return []
    modules = [f"{name}={MOUNT}/{path}" for name, path in served.adapters]
    return [
        "--enable-lora",
        f"--max-loras={served.max_adapters}",
        f"--max-lora-rank={max_lora_rank(served, target)}",
        "--lora-modules",
        *modules,
    ]


def engine_args(served: ServedModel, target: DeployTarget, gpus: int) -> list[str]:
    """vLLM engine options shared by KServe's runtime and the vLLM container."""
    args = [
        f"--dtype={DTYPES.get(served.base.dtype or 'bf16', 'auto')}",
        f"--max-model-len={served.max_seq}",
        f"--max-num-seqs={served.batch}",
    ]
    if gpus > 1:
        args.append(f"--tensor-parallel-size={gpus}")
    if served.quantize in VLLM_QUANTIZATION:
        args.append(f"--quantization={VLLM_QUANTIZATION[served.quantize]}")
    return args + lora_args(served, target)


def vllm_env(served: ServedModel) -> list[dict[str, str]]:
    """Dynamic adapters may also be loaded at run time through vLLM's admin endpoint."""
    if served.merged or not served.adapters:
        return []
    return [{"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"}]


def model_reference(served: ServedModel) -> tuple[str, str | None]:
    """What vLLM loads: the merged weights in the mounted build folder, or the hub model
    and its revision."""
    if served.merged:
        return f"{MOUNT}/{served.merged_path}", None
    weights = served.base.weights
    assert weights is not None  # check_vllm guarantees hub weights
    return weights.location, weights.revision


def served_model_name(served: ServedModel) -> str:
    """The `model` name that selects the base weights on vLLM. With adapters loaded on
    demand it is the base model's name, as `fmc serve` names it (vLLM refuses to start when
    an adapter, named after its model or merge, has the served model's name); otherwise
    the deployment's."""
    return served.base.name if served.adapters and not served.merged else served.deploy


def vllm_container_args(served: ServedModel, target: DeployTarget, gpus: int) -> list[str]:
    """Arguments of the vllm-openai image (its entrypoint is vLLM's OpenAI server)."""
    model, revision = model_reference(served)
    name = served_model_name(served)
    args = [f"--model={model}", f"--served-model-name={name}", f"--port={VLLM_PORT}"]
    if revision:
        args.append(f"--revision={revision}")
    return args + engine_args(served, target, gpus)

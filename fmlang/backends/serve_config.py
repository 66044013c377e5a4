"""From a built and run spec to the `fmc serve` configuration: the build's `server.json`
(written by `fmc build` from the `deploy` block and the solver's knobs) joined with what the
run produced (the trained adapters, the base weights the training job resolved)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmlang.diagnostics import error
from fmlang.errors import StageError


def served_deployments(build_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in (build_dir / "deploy").glob("*/server.json"))


def serve_config(build_dir: Path, deploy: str, host: str | None = None,
                 port: int | None = None) -> Any:  # fmt: skip
    """The `ServeConfig` for one deployment with a local target: `server.json` mapped by the
    serving package's `from_build`, with the base weights the training job resolved (a
    `local` folder is relative to the spec, which `server.json` does not know)."""
    from fmlang.backends.serve.config import from_build
    from fmlang.backends.train.job import TrainJob
    from fmlang.backends.train.loader import weights_folder

    document = _server_json(build_dir, deploy)
    if document.get("task") not in ("generate", "classify"):
        raise StageError(error("FM1050", f"`fmc serve` serves generate and classify models, "
                               f"not `{document.get('task')}`"))  # fmt: skip
    job = TrainJob.read(_job_path(build_dir, document))
    config = from_build(document, build_dir)
    missing = [name for name, path in config.adapters.items()
               if not (Path(path) / "adapter_config.json").exists()]  # fmt: skip
    if missing:
        raise StageError(_not_run(deploy, f"no trained adapter for {', '.join(missing)}"))
    update: dict[str, Any] = {"host": host or config.host}
    if port is not None:
        update["port"] = port
    if document.get("base", {}).get("weights", {}).get("kind") != "build":  # not merged weights
        update["base_model"] = weights_folder(job)
    return config.model_copy(update=update)


def _server_json(build_dir: Path, deploy: str) -> dict[str, Any]:
    path = build_dir / "deploy" / deploy / "server.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        known = ", ".join(served_deployments(build_dir)) or "none"
        raise StageError(
            error(
                "FM1051",
                f"deployment `{deploy}` has no local server in `{build_dir}`",
                help=f"deployments with a `local {{ }}` target: {known}",
                notes=(str(exc),),
            )
        ) from exc


def _job_path(build_dir: Path, document: dict[str, Any]) -> Path:
    """The training job of the served model, or of a merge's first parent."""
    model = str(document.get("model"))
    job = build_dir / "run" / "models" / model / "job.json"
    if job.exists():
        return job
    recipe = build_dir / "merges" / f"{model}.json"
    if recipe.exists():
        parents = json.loads(recipe.read_text(encoding="utf-8")).get("parents", [])
        if parents:
            return build_dir / "run" / "models" / str(parents[0]["model"]) / "job.json"
    raise StageError(_not_run(model, f"`{model}` has not been trained in `{build_dir}`"))


def _not_run(name: str, why: str) -> Any:
    return error(
        "FM0710",
        f"nothing to serve for `{name}`: {why}",
        help="run the spec first: `fmc run FILE` trains (and merges) what the deployment serves",
    )

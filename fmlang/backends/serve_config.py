"""From a build folder to the `fmc serve` configuration, two ways:

- `serve_config` (`fmc serve FILE`): the build's `server.json` (written by `fmc build` from
  the `deploy` block and the solver's knobs) joined with what the run produced on this
  machine (the trained adapters, the base weights the training job resolved).
- `serve_config_file` (`fmc serve --config DIR/deploy/<name>/server.json`, what the emitted
  containers run): the file alone, every path in it relative to the build folder, so a build
  folder mounted anywhere serves without the spec. `local(...)` base weights are read from
  `DIR/weights/<base>` (the spec's folder is not in the build folder; copy it there).

Both serve registered versions, not whatever the last run left in `run/`: each adapter is
the registry version release.py chooses (`--version REF`, else the `current` pointer of
`fmc rollback`, else the newest version whose gates all passed and that is not superseded),
loaded from `registry/objects/<hash>/`. `serve_plan` and `serve_plan_file` say which version
each adapter is and why, for the startup line.

A deployment of a model that selects its base (`base auto in [...]`) has no base in its
server.json, only every candidate's (`base.candidates`, keyed by the candidate model `m+c`):
the version served for `m` is a candidate's (release.py follows the registry's `selected`
pointer), and its base is the one loaded: the candidate's training job's weights for
`fmc serve FILE`, its `candidates` entry for `--config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlang.diagnostics import error
from fmlang.errors import StageError

if TYPE_CHECKING:
    from fmlang.backends.release import Chosen


@dataclass(frozen=True)
class ServePlan:
    """The `ServeConfig` to serve and the registry version chosen for each adapter."""

    config: Any
    versions: tuple[Chosen, ...] = ()


def served_deployments(build_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in (build_dir / "deploy").glob("*/server.json"))


def serve_config(build_dir: Path, deploy: str, host: str | None = None,
                 port: int | None = None) -> Any:  # fmt: skip
    """`serve_plan`'s configuration: the newest passing (or current) version of each
    adapter."""
    return serve_plan(build_dir, deploy, host, port).config


def serve_plan(
    build_dir: Path,
    deploy: str,
    host: str | None = None,
    port: int | None = None,
    version: str | None = None,
    allow_failed_gates: bool = False,
) -> ServePlan:
    """The `ServeConfig` for one deployment with a local target: `server.json` mapped by the
    serving package's `from_build`, with the base weights the training job resolved (a
    `local` folder is relative to the spec, which `server.json` does not know) and each
    adapter the registry version `choose_versions` picks."""
    from fmlang.backends.serve.config import from_build
    from fmlang.backends.train.job import TrainJob
    from fmlang.backends.train.loader import weights_folder

    document = _server_json(build_dir, deploy)
    _check_task(document)
    document, selected = _selected_base(build_dir, document, version, allow_failed_gates)
    job = TrainJob.read(
        _job_path(build_dir, document)
        if selected is None
        else build_dir / "run" / "models" / selected / "job.json"
    )
    config = from_build(document, build_dir)
    _check_adapters(config, deploy)
    update: dict[str, Any] = {}
    if document.get("base", {}).get("weights", {}).get("kind") != "build":  # not merged weights
        update["base_model"] = weights_folder(job)
    config, chosen = choose_versions(
        build_dir, config.model_copy(update=update), version, allow_failed_gates
    )
    return ServePlan(_listening(config, host, port), chosen)


def serve_config_file(path: Path, host: str | None = None, port: int | None = None) -> Any:
    """`serve_plan_file`'s configuration, with the versions chosen without flags."""
    return serve_plan_file(path, host, port).config


def serve_plan_file(
    path: Path,
    host: str | None = None,
    port: int | None = None,
    version: str | None = None,
    allow_failed_gates: bool = False,
) -> ServePlan:
    """The `ServeConfig` of `fmc serve --config PATH`: a build's server.json served from its
    build folder alone (or a plain `ServeConfig` file, served as it is), with what it names
    checked to be there and each adapter the registry version `choose_versions` picks.
    Raises `StageError` (FM1001, FM1002, FM1006, FM1050, FM0710, FM1080 to FM1084)."""
    from fmlang.backends.serve.config import build_folder, load_build_document, load_config

    document = _peek(path)
    base = document.get("base") if isinstance(document, dict) else None
    if isinstance(document, dict) and isinstance(base, dict) and base.get("candidates"):
        document = _selected_base(build_folder(path), document, version, allow_failed_gates)[0]
        config = load_build_document(path, document)
    else:
        config = load_config(path)
        document = json.loads(path.read_text(encoding="utf-8"))  # load_config read it already
    chosen: tuple[Chosen, ...] = ()
    if isinstance(document, dict) and "schema_version" in document:
        _check_task(document)
        _check_adapters(config, str(document.get("deploy")))
        _check_base(config, document)
        config, chosen = choose_versions(build_folder(path), config, version, allow_failed_gates)
    elif version is not None:
        raise StageError(_no_versions("a hand-written configuration names its adapter folders"))
    return ServePlan(_listening(config, host, port), chosen)


def choose_versions(
    build_dir: Path, config: Any, version: str | None = None, allow_failed_gates: bool = False
) -> tuple[Any, tuple[Chosen, ...]]:
    """`config` with each adapter replaced by the registry version release.py chooses
    (`version` names one of them); FM1080 to FM1084 when none can be served."""
    from fmlang.backends.registry import REGISTRY_DIR, Registry
    from fmlang.backends.release import choose, other_name, serves_as

    names = sorted(config.adapters)
    if not names:
        if version is not None:
            raise StageError(_no_versions("this deployment serves weights merged into its base"))
        return config, ()
    registry = Registry(build_dir / REGISTRY_DIR)
    named = registry.resolve(version) if version is not None else None
    if named is not None and serves_as(named.name) not in names:
        raise StageError(other_name(str(version), named, ", ".join(f"`{n}`" for n in names)))
    chosen = tuple(
        choose(registry, name, version if named and serves_as(named.name) == name else None,
               allow_failed_gates)
        for name in names
    )  # fmt: skip
    adapters = {name: str(c.version.path) for name, c in zip(names, chosen, strict=True)}
    return config.model_copy(update={"adapters": adapters}), chosen


def _peek(path: Path) -> Any:
    """The JSON in `path`, or None when it cannot be read (`load_config` says why)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _selected_base(
    build_dir: Path, document: dict[str, Any], version: str | None, allow_failed_gates: bool
) -> tuple[dict[str, Any], str | None]:
    """`document` with the base of the candidate served for a model that selects its base
    (the version release.py chooses for it), and that candidate's name; as it is, and
    None, for any other deployment. FM0894 when the chosen candidate is not one the build
    lists (built before the candidates changed)."""
    from fmlang.backends.registry import REGISTRY_DIR, Registry
    from fmlang.backends.release import choose

    candidates = document.get("base", {}).get("candidates")
    if not candidates:
        return document, None
    model = str(document.get("model"))
    chosen = choose(Registry(build_dir / REGISTRY_DIR), model, version, allow_failed_gates)
    name = chosen.version.name
    if name not in candidates:
        raise StageError(
            error(
                "FM0894",
                f"`{model}` serves candidate `{name}`, which this build does not list "
                f"(it lists {', '.join(f'`{c}`' for c in sorted(candidates))})",
                help="run `fmc run` with the spec this build was made from: it selects among "
                "the candidates the build lists",
            )
        )
    return {**document, "base": dict(candidates[name])}, name


def _listening(config: Any, host: str | None, port: int | None) -> Any:
    update: dict[str, Any] = {"host": host or config.host}
    if port is not None:
        update["port"] = port
    return config.model_copy(update=update)


def _check_task(document: dict[str, Any]) -> None:
    if document.get("task") not in ("generate", "classify"):
        raise StageError(error("FM1050", f"`fmc serve` serves generate and classify models, "
                               f"not `{document.get('task')}`"))  # fmt: skip


def _check_adapters(config: Any, deploy: str) -> None:
    missing = [name for name, path in config.adapters.items()
               if not (Path(path) / "adapter_config.json").exists()]  # fmt: skip
    if missing:
        folders = [config.adapters[name] for name in missing]
        raise StageError(_not_run(deploy, f"no trained adapter for {', '.join(missing)}",
                                  notes=tuple(f"looked in {f}" for f in folders)))  # fmt: skip


def _check_base(config: Any, document: dict[str, Any]) -> None:
    """A base model folder from the build folder (merged or `local` weights) is there."""
    weights = document.get("base", {}).get("weights", {})
    folder = Path(config.base_model)
    if weights.get("kind") not in ("build", "local") or (folder / "config.json").is_file():
        return
    if weights.get("kind") == "build":
        why = f"the merged weights are not in the build folder ({folder})"
        raise StageError(_not_run(str(document.get("deploy")), why))
    name = document.get("base", {}).get("name")
    raise StageError(
        error(
            "FM1006",
            f"cannot load the base model `{name}`: its `local(...)` weights are not in the "
            f"build folder (no config.json in {folder})",
            help=f"copy the model folder that the spec's `weights local(...)` names to "
            f"DIR/{weights.get('location')} in the build folder: a server started from "
            "server.json sees only the build folder",
        )
    )


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


def _no_versions(why: str) -> Any:
    return error(
        "FM1084",
        f"--version has nothing to choose: {why}",
        help="drop --version; it chooses among the registered versions of a deployment's adapters",
    )


def _not_run(name: str, why: str, notes: tuple[str, ...] = ()) -> Any:
    return error(
        "FM0710",
        f"nothing to serve for `{name}`: {why}",
        help="run the spec first: `fmc run FILE` trains (and merges) what the deployment serves",
        notes=notes,
    )

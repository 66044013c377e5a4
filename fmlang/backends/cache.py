"""The content-hash cache of `fmc run`: a stage whose inputs hash the same as last time, and
whose outputs are still the bytes it wrote, is skipped.

A stage's key is the sha256 of everything that determines its outputs (its lowered SQL or
settings, the content of its input files, the keys of the stages it reads from, fmc's
version), so a change anywhere upstream changes the key of exactly the stages downstream.

Beside the key, the cache records the sha256 of every file the stage wrote (a folder
output stands for every file under it). Before a stage is skipped its outputs are hashed
again: a file that was changed, truncated, removed or added since (a bit flip, a full
disk, a hand edit) makes the stage run again, and the run says which file it was. An
entry without digests (written by an older fmc) is not trusted either.
"""

from __future__ import annotations

import errno
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang import __version__
from fmlang.atomic import write_text_atomic
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.files import file_sha256

# What a full disk, a quota or a folder that cannot be written looks like to a writer.
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO}


def stage_key(*parts: object) -> str:
    """sha256 over the parts' canonical JSON (strings, numbers, lists, dicts)."""
    canonical = json.dumps([__version__, *parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def output_files(root: Path, outputs: Iterable[str]) -> list[str]:
    """Every file among `outputs` (paths relative to `root`; a folder stands for the files
    under it, at any depth), as sorted POSIX paths relative to `root`."""
    files: set[str] = set()
    for output in outputs:
        path = root / output
        if path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.add(Path(output).as_posix())
    return sorted(files)


def digests(root: Path, outputs: Iterable[str]) -> dict[str, str]:
    """The sha256 of every file among `outputs`, by path relative to `root`."""
    return {name: file_sha256(root / name) for name in output_files(root, outputs)}


def first_difference(root: Path, outputs: Iterable[str], recorded: dict[str, str]) -> str | None:
    """How the files among `outputs` differ from the `recorded` digests, naming the first
    file that does (missing, changed or added); None when every byte is as recorded."""
    present = output_files(root, outputs)
    for name in sorted(recorded):
        path = root / name
        if not path.is_file():
            return f"`{name}` is missing"
        if file_sha256(path) != recorded[name]:
            return f"`{name}` changed since it was written (its sha256 differs)"
    added = sorted(set(present) - set(recorded))
    return f"`{added[0]}` is not among the files written" if added else None


@contextmanager
def writing(what: str) -> Iterator[None]:
    """A full disk (or a quota, or a folder that cannot be written) while `what` writes its
    outputs: FM0722 naming the file, not an internal error. What it left half-written is
    never used: a stage is recorded only after all its outputs are, a checkpoint is resumed
    only once marked complete, and both are verified against their digests first."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _CANNOT_WRITE:
            raise
        where = f" `{exc.filename}`" if exc.filename else ""
        raise StageError(
            error(
                "FM0722",
                f"{what} cannot write{where}: {exc.strerror or exc}",
                help="free disk space (or fix the folder's permissions) and run the same "
                "command again: it resumes where it stopped, and nothing left half-written "
                "is used",
            )
        ) from exc


class WouldRun(Exception):
    """A dry run's stage whose key or outputs differ: it would run. Raised by `fresh`
    before the stage does any work."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class StageCache:
    """`run/cache.json`: stage name → {key, outputs (relative to the build folder), digests
    (output file → sha256), explain}. `log` receives a line for each stage whose outputs
    changed, or whose named inputs did. `explain` names a few of the inputs a key hashes
    (a base model's weights, an upstream stage's key) by a short readable value, so a
    rerun can say which changed; `reasons` holds, per stage found stale, why.

    A dry cache (`fmc run --dry-run`) writes nothing: a stale stage raises `WouldRun` from
    `fresh`, its new key held in memory so that the stages reading it see it change; `read`
    collects the stages whose keys were asked for (a stage's upstream)."""

    build_dir: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Callable[[str], None] = _to_stderr
    reasons: dict[str, str] = field(default_factory=dict)
    dry: bool = False
    read: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.build_dir / "run" / "cache.json"

    @classmethod
    def load(cls, build_dir: Path, log: Callable[[str], None] = _to_stderr) -> StageCache:
        """The recorded cache; an unreadable file (or entry) counts as nothing recorded."""
        cache = cls(build_dir, log=log)
        try:
            document = json.loads(cache.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cache
        except (OSError, ValueError) as exc:
            log(f"note: `run/cache.json` cannot be read ({exc}); every stage runs again")
            return cache
        if isinstance(document, dict):
            cache.entries = {k: v for k, v in document.items() if _well_formed(v)}
        return cache

    def fresh(self, stage: str, key: str, explain: dict[str, str] | None = None) -> bool:
        """Whether `stage` ran with this key and its outputs are still what it wrote.
        `explain`: the stage's named inputs now (see `record`), to say which changed."""
        entry = self.entries.get(stage)
        if not entry or entry.get("key") != key:
            self._changed(stage, entry, explain)
            self._would_run(stage, key)
            return False
        outputs, recorded = entry["outputs"], entry.get("digests")
        missing = [out for out in outputs if not (self.build_dir / out).exists()]
        if missing:
            why: str | None = f"`{missing[0]}` is missing"
        elif recorded is None:
            why = "no digests of its outputs were recorded (by an older fmc)"
        else:
            why = first_difference(self.build_dir, outputs, recorded)
        if why is not None:
            self.log(f"note: `{stage}` runs again: {why}")
            self.reasons[stage] = why
            self._would_run(stage, key)
        return why is None

    def _would_run(self, stage: str, key: str) -> None:
        if self.dry:
            self.entries[stage] = {"key": key, "outputs": [], "digests": {}}
            raise WouldRun(stage)

    def _changed(
        self, stage: str, entry: dict[str, Any] | None, explain: dict[str, str] | None
    ) -> None:
        """Why a stage whose key differs runs: the named inputs whose values changed (also
        logged), else that its inputs or settings did."""
        if not entry:
            self.reasons[stage] = "it has not run in this build folder before"
            return
        before = entry.get("explain")
        before = before if isinstance(before, dict) else {}
        changes = [
            _difference(name, str(before[name]), now)
            for name, now in (explain or {}).items()
            if name in before and before[name] != now
        ]
        if changes:
            self.log(f"note: `{stage}` runs again: {'; '.join(changes)}")
        self.reasons[stage] = "; ".join(changes) or "its inputs or settings changed"

    def key_of(self, stage: str) -> str | None:
        self.read.append(stage)
        entry = self.entries.get(stage)
        return str(entry["key"]) if entry else None

    def record(
        self, stage: str, key: str, outputs: list[str], explain: dict[str, str] | None = None
    ) -> None:
        """Record the stage's key and the digests of its outputs as they are now, with
        `explain` (input name → short value) for the next run's reasons."""
        if self.dry:
            raise AssertionError(f"a dry run recorded `{stage}`")
        self.entries[stage] = {
            "key": key,
            "outputs": sorted(outputs),
            "digests": digests(self.build_dir, outputs),
        }
        if explain:
            self.entries[stage]["explain"] = dict(explain)
        with writing(f"`{stage}`"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.entries, indent=2, sort_keys=True) + "\n"
            write_text_atomic(self.path, text)


def _difference(name: str, before: str, now: str) -> str:
    """`name changed: before → now`; a value of several lines (one item each: a dataset's
    rules) names only the items that differ."""
    if "\n" not in before + now:
        return f"{name} changed: {before} → {now}"
    old, new = before.split("\n"), now.split("\n")
    gone, added = [i for i in old if i not in new], [i for i in new if i not in old]
    if len(gone) == len(added) == 1:
        return f"{name} changed: `{gone[0]}` → `{added[0]}`"
    parts = [f"`{i}` removed" for i in gone] + [f"`{i}` added" for i in added]
    return f"{name} changed: {', '.join(parts) or 'their order'}"


def _well_formed(entry: Any) -> bool:
    """An entry as `record` writes it: a string key and a list of output paths."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("outputs"), list)
        and all(isinstance(out, str) for out in entry["outputs"])
        and isinstance(entry.get("digests", {}), dict)
    )

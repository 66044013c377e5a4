"""The content-hash cache of `fmc run`: a stage whose inputs hash the same as last time, and
whose outputs are all still there, is skipped.

A stage's key is the sha256 of everything that determines its outputs (its lowered SQL or
settings, the content of its input files, the keys of the stages it reads from, fmc's
version), so a change anywhere upstream changes the key of exactly the stages downstream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang import __version__
from fmlang.atomic import write_text_atomic


def stage_key(*parts: object) -> str:
    """sha256 over the parts' canonical JSON (strings, numbers, lists, dicts)."""
    canonical = json.dumps([__version__, *parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class StageCache:
    """`run/cache.json`: stage name → {key, outputs (relative to the build folder)}."""

    build_dir: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.build_dir / "run" / "cache.json"

    @classmethod
    def load(cls, build_dir: Path) -> StageCache:
        cache = cls(build_dir)
        try:
            cache.entries = json.loads(cache.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache.entries = {}
        return cache

    def fresh(self, stage: str, key: str) -> bool:
        entry = self.entries.get(stage)
        if not entry or entry.get("key") != key:
            return False
        return all((self.build_dir / out).exists() for out in entry.get("outputs", []))

    def key_of(self, stage: str) -> str | None:
        entry = self.entries.get(stage)
        return str(entry["key"]) if entry else None

    def record(self, stage: str, key: str, outputs: list[str]) -> None:
        self.entries[stage] = {"key": key, "outputs": sorted(outputs)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.entries, indent=2, sort_keys=True) + "\n")

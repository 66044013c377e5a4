"""`fmc init [DIR] --task classify|generate`: start a project in one command. It writes
the starter spec, its tiny dataset and a README (fmlang/scaffold.py), never overwriting."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from fmlang.diagnostics import Diagnostic, error
from fmlang.scaffold import TASKS, existing, project, write_project

EXIT_OK, EXIT_USAGE = 0, 2


@click.command()
@click.argument("directory", metavar="[DIR]", default=".", type=click.Path())
@click.option("--task", type=click.Choice(TASKS), default="classify", show_default=True,
              help="a spam classifier (weak labels, MiniLM) or a generative assistant "
              "(a tiny Llama that trains in seconds)")  # fmt: skip
def init(directory: str, task: str) -> None:
    """Start a project in DIR (default: here): a spec that checks, a tiny dataset, a README."""
    folder = Path(directory)
    starter = project(task)
    present = existing(folder, starter.files)
    if present:
        _fail(
            error(
                "FM1180",
                f"`fmc init` would overwrite {_listed(present)}; it wrote nothing",
                help=f"pick an empty folder (`fmc init NEW_DIR --task {task}`) or move "
                "those files away",
            )
        )
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(0, "it is a file, not a folder")
        written = write_project(folder, starter.files)
    except OSError as exc:
        _fail(
            error(
                "FM1181",
                f"cannot create the project in `{folder}`: {exc.strerror or exc}",
                help="pass a new or empty folder, or make this one writable",
            )
        )
    for path in written:
        click.echo(f"wrote {path}", err=True)
    spec = folder / starter.spec_name
    click.echo(f"next: fmc check {spec}   (then see {folder / 'README.md'})", err=True)
    sys.exit(EXIT_OK)


def _listed(paths: list[Path]) -> str:
    return ", ".join(f"`{p}`" for p in paths)


def _fail(diagnostic: Diagnostic) -> NoReturn:
    from fmlang.diagnostics.render import excerpt_lines

    for text, _ in excerpt_lines(diagnostic, {}):
        click.echo(text, err=True)
    sys.exit(EXIT_USAGE)

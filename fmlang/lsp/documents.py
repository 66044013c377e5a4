"""One analysed version of a document (`Snapshot`) and the checker that makes them.

A document is checked under the name the CLI would give it (its path relative to the
server's working folder), so its diagnostics read exactly as `fmc check` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pygls.uris import from_fs_path, to_fs_path

from fmlang.api import CheckResult, check_text
from fmlang.check.loader import display_path
from fmlang.diagnostics import Diagnostic
from fmlang.lsp.positions import UTF16, LineIndex
from fmlang.paths import stdlib_dir
from fmlang.syntax import ast
from fmlang.syntax.incremental import ParseCache, reusing_parses

STD_PREFIX = "<std>/"


def document_key(uri: str) -> tuple[str, Path]:
    """The file name the checker uses for a document, and the folder its imports start from."""
    path = to_fs_path(uri) if uri.startswith("file:") else None
    if path is None:
        return uri, Path.cwd()
    return display_path(Path(path)), Path(path).parent


def file_uri(file: str) -> str:
    """The URI of a file name as the checker writes it (`<std>/models.fm`, `spec.fm`)."""
    if file.startswith(STD_PREFIX):
        path = stdlib_dir() / file[len(STD_PREFIX) :]
    elif ":" in file and not Path(file).is_absolute():
        return file  # an untitled document's URI, used as its name
    else:
        path = Path(file).resolve()
    return from_fs_path(str(path)) or file


@dataclass(frozen=True)
class Verified:
    """What `fmlang.api.analyze` (run in the verifier's process) said about one version."""

    diagnostics: tuple[Diagnostic, ...]
    constraints: tuple[dict[str, Any], ...] = ()  # the verify report's rows (estimates)


@dataclass
class Snapshot:
    uri: str
    version: int | None
    text: str
    file: str
    base: Path
    result: CheckResult
    encoding: str = UTF16
    verified: Verified | None = None
    memo: dict[str, Any] = field(default_factory=dict)  # what features derive, built once
    _lines: dict[str, LineIndex] = field(default_factory=dict)

    @property
    def module(self) -> ast.Module | None:
        """The document's AST, or None when it does not parse."""
        source = self.result.program.files.get(self.file)
        if source is None or any(d.code.startswith("FM01") for d in self.parse_errors()):
            return None
        return source.module

    def parse_errors(self) -> list[Diagnostic]:
        return [
            d
            for d in self.result.program.sink.items
            if d.code.startswith("FM01")
            and (d.primary_span is None or d.primary_span.file == self.file)
        ]

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """The verifier's full set once it has run for this version, else the checker's."""
        if self.verified is not None:
            return list(self.verified.diagnostics)
        return self.result.diagnostics

    def lines(self, file: str | None = None) -> LineIndex:
        """Line index of this document, or of another file the checker loaded."""
        name = file or self.file
        index = self._lines.get(name)
        if index is None:
            source = self.result.program.files.get(name)
            text = self.text if name == self.file else (source.text if source else "")
            index = self._lines[name] = LineIndex(text, self.encoding)
        return index

    def uri_of(self, file: str) -> str:
        return self.uri if file == self.file else file_uri(file)


class Checker:
    """Checks documents, reusing each one's parses across versions. Not thread-safe: the
    scheduler calls it from one worker thread."""

    def __init__(self) -> None:
        self._caches: dict[str, ParseCache] = {}

    def check(self, uri: str, text: str, version: int | None, encoding: str = UTF16) -> Snapshot:
        file, base = document_key(uri)
        with reusing_parses(self.cache(uri)):
            result = check_text(text, file, base)
        return Snapshot(uri, version, text, file, base, result, encoding)

    def cache(self, uri: str) -> ParseCache:
        return self._caches.setdefault(uri, ParseCache())

    def forget(self, uri: str) -> None:
        self._caches.pop(uri, None)

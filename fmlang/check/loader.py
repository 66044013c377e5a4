"""Read, decode and parse every file a spec reaches through its imports.

What fmc reads and quotes, so that a hostile spec cannot make it hang or print other files:
- `import "…"` names a `.fm` file (after symlinks are followed); any other path is refused
  unread (FM0207).
- Every file is read through `reading.read_spec`: regular files only, at most 16 MiB each
  (FM0001, FM0003); all the files one check reads together are at most MAX_PROGRAM_FILES
  files and MAX_PROGRAM_BYTES bytes (FM0208).
- A file's text is quoted in diagnostics only when it is UTF-8 text without NUL bytes
  (FM0002) and, for a file given on the command line that is not named `*.fm`, only when
  its first token begins a declaration (FM0004 otherwise: `fmc check /etc/passwd` names the
  file but shows none of it). A file refused this way is not added to `Program.files`, the
  only place the renderer takes source lines from.
"""

from __future__ import annotations

import os
from pathlib import Path

from fmlang.check.program import Program, SourceFile, Symbol, own_symbols
from fmlang.check.reading import read_spec
from fmlang.diagnostics import Diagnostic, Label, Severity, Span, error
from fmlang.paths import stdlib_dir
from fmlang.suggest import closest, did_you_mean
from fmlang.syntax import ast
from fmlang.syntax.parser import MAX_SOURCE_BYTES, parse
from fmlang.syntax.untrusted import starts_like_spec

STD_PREFIX = "std"
SPEC_SUFFIX = ".fm"
MAX_PROGRAM_FILES = 1000
MAX_PROGRAM_BYTES = 64 * 1024 * 1024


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def resolved(path: Path) -> Path:
    """The absolute, symlink-free path; as given (made absolute) when it cannot be resolved,
    as for a symlink loop, so that reading it reports the problem."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def read_source(path: Path, shown: str) -> tuple[str | None, Diagnostic | None]:
    """One file's text, or the problem that stops it being read (`fmc fmt` reads this way)."""
    read = read_spec(path, shown)
    return read.text, read.problem


class Loader:
    """Loads root files and, transitively, every imported file and stdlib module."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.stack: list[str] = []
        self.files_read = 0
        self.bytes_read = 0
        self.over_budget = False  # reported once; nothing more is read after it

    def load_root(self, path: Path) -> None:
        self._load(resolved(path), display_path(path), stdlib=False, importer=None)

    def load_text(self, text: str, shown: str, base: Path) -> None:
        self.files_read += 1
        self.bytes_read += len(text.encode("utf-8", errors="replace"))
        self._parse_and_import(text, shown, base, stdlib=False)

    def _load(self, path: Path, shown: str, stdlib: bool, importer: Label | None) -> str | None:
        key = shown
        if key in self.stack:
            self._cycle(key, importer)
            return None
        if key in self.program.files:
            return key
        text = self._read(path, shown, importer)
        if text is None:
            return None
        if importer is None and path.suffix != SPEC_SUFFIX and not starts_like_spec(text):
            self.program.sink.add(_not_a_spec(shown))
            return None
        self._parse_and_import(text, key, path.parent, stdlib)
        return key

    def _read(self, path: Path, shown: str, importer: Label | None) -> str | None:
        """The file's text within the program's budget; reports why there is none."""
        if self.over_budget:
            return None
        if self.files_read >= MAX_PROGRAM_FILES:
            self._budget_spent(f"more than {MAX_PROGRAM_FILES:,} files", importer)
            return None
        limit = min(MAX_SOURCE_BYTES, MAX_PROGRAM_BYTES - self.bytes_read)
        read = read_spec(path, shown, limit)
        self.files_read += 1
        self.bytes_read += read.size
        if read.text is None and read.problem is None:
            self._budget_spent(f"more than {MAX_PROGRAM_BYTES // 2**20} MiB", importer)
            return None
        problem = read.problem
        if problem is not None and importer is not None and problem.code == "FM0001":
            problem = error(
                "FM0202",
                f"imported file `{shown}` cannot be read: {read.reason}",
                importer.span,
                "imported here",
                help="check the path, relative to this file",
            )
        if problem is not None:
            self.program.sink.add(problem)
        return read.text

    def _budget_spent(self, what: str, importer: Label | None) -> None:
        self.over_budget = True
        self.program.sink.add(
            error(
                "FM0208",
                f"the spec and the files it imports add up to {what}",
                importer.span if importer else None,
                "this import is past the limit",
                help="a spec is checked with everything it imports; check the parts separately "
                "or import less",
            )
        )

    def _parse_and_import(self, text: str, key: str, base: Path, stdlib: bool) -> None:
        result = parse(text, key)
        self.program.sink.extend(result.diagnostics)
        module = result.module or ast.Module(())
        self.program.files[key] = SourceFile(key, text, module, stdlib)
        scope: dict[str, Symbol] = {}
        origins = self.program.imported.setdefault(key, {})
        self.stack.append(key)
        for item in module.items:
            if isinstance(item, ast.ImportModule | ast.ImportFile):
                imported = (
                    self._import_module(item)
                    if isinstance(item, ast.ImportModule)
                    else self._import_file(item, base)
                )
                scope.update(imported)
                origins.update(dict.fromkeys(imported, item.span))
        self.stack.pop()
        for symbol in own_symbols(self.program.files[key]):
            scope[symbol.name] = symbol
        self.program.scopes[key] = scope

    def _cycle(self, key: str, importer: Label | None) -> None:
        chain = " → ".join([*self.stack[self.stack.index(key) :], key])
        self.program.sink.add(
            error(
                "FM0203",
                f"import cycle: {chain}",
                importer.span if importer else None,
                "this import closes the cycle",
                help="move the shared declarations into a third file that both import",
            )
        )

    def _import_file(self, item: ast.ImportFile, base: Path) -> dict[str, Symbol]:
        target = resolved(base / item.path)
        if target.suffix != SPEC_SUFFIX:
            self.program.sink.add(_not_a_spec_import(item, display_path(target)))
            return {}
        key = self._load(target, display_path(target), False, Label(item.span, "", True))
        if key is None:
            return {}
        return {s.name: s for s in own_symbols(self.program.files[key])}

    def _import_module(self, item: ast.ImportModule) -> dict[str, Symbol]:
        parts = [p.name for p in item.path]
        if parts[0] != STD_PREFIX:
            self.program.sink.add(
                error(
                    "FM0201",
                    f"unknown module `{item.dotted}`",
                    item.path[0].span,
                    "modules start with `std.`",
                    help='import the standard library as `std.…`, or a file as `import "file.fm"`',
                )
            )
            return {}
        module_parts, wanted = self._split_module(parts, item)
        if module_parts is None:
            return {}
        symbols = self._load_std(module_parts)
        names = item.names if item.names is not None else wanted
        if names is None:
            return symbols
        return self._select(symbols, names, ".".join([STD_PREFIX, *module_parts]))

    def _split_module(
        self, parts: list[str], item: ast.ImportModule
    ) -> tuple[list[str] | None, tuple[ast.Ident, ...] | None]:
        """`std.models.minilm_l6` → module `models`, name `minilm_l6`; `std.hardware` → all."""
        root = stdlib_dir()
        for cut in range(len(parts), 1, -1):
            if (root.joinpath(*parts[1:cut]).with_suffix(".fm")).is_file():
                rest = item.path[cut:]
                if len(rest) > 1:
                    break
                return parts[1:cut], (rest if rest else None)
        available = sorted(p.stem for p in root.glob("*.fm"))
        near = closest(parts[1] if len(parts) > 1 else "", available)
        hint = f"did you mean `std.{near}`?" if near else None
        self.program.sink.add(
            error(
                "FM0201",
                f"unknown module `{item.dotted}`",
                item.span,
                "no such stdlib module",
                help=hint or f"stdlib modules: {', '.join('std.' + a for a in available)}",
            )
        )
        return None, None

    def _load_std(self, module_parts: list[str]) -> dict[str, Symbol]:
        path = stdlib_dir().joinpath(*module_parts).with_suffix(".fm")
        key = self._load(path, "<std>/" + "/".join(module_parts) + ".fm", True, None)
        if key is None:
            return {}
        return {s.name: s for s in own_symbols(self.program.files[key])}

    def _select(
        self, symbols: dict[str, Symbol], names: tuple[ast.Ident, ...], module: str
    ) -> dict[str, Symbol]:
        out = {}
        for ident in names:
            if ident.name in symbols:
                out[ident.name] = symbols[ident.name]
                continue
            self.program.sink.add(
                Diagnostic(
                    Severity.ERROR,
                    "FM0204",
                    f"`{module}` has no `{ident.name}`",
                    (Label(ident.span, "not in this module", True),),
                    (),
                    did_you_mean(ident.name, symbols)
                    or f"it provides: {', '.join(sorted(symbols))}",
                )
            )
        return out


def _not_a_spec(shown: str) -> Diagnostic:
    return error(
        "FM0004",
        f"`{shown}` is not a .fm spec: it does not start with a declaration",
        Span(shown, 1, 1, 1, 1),
        "not a spec (its text is not shown)",
        help="pass a spec: a file that starts with `import`, `dataset`, `labels`, `model`, "
        "`merge`, `constraints`, `deploy`, `base_model`, `hardware` or `let`",
    )


def _not_a_spec_import(item: ast.ImportFile, shown: str) -> Diagnostic:
    return error(
        "FM0207",
        f"cannot import `{shown}`: only `.fm` specs are imported",
        item.span,
        "not a .fm file (it is not read)",
        help='name a spec file ending in `.fm`, e.g. `import "shared.fm"`',
    )

"""Read, decode and parse every file a spec reaches through its imports."""

from __future__ import annotations

import os
from pathlib import Path

from fmlang.check.program import Program, SourceFile, Symbol, own_symbols
from fmlang.diagnostics import Diagnostic, Label, Severity, Span, error
from fmlang.paths import stdlib_dir
from fmlang.suggest import closest, did_you_mean
from fmlang.syntax import ast
from fmlang.syntax.parser import MAX_SOURCE_BYTES, parse

STD_PREFIX = "std"


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
    """The file's text, or the I/O (FM0001) or encoding (FM0002) problem."""
    start = Span(shown, 1, 1, 1, 1)
    try:
        if path.is_dir():
            return None, error(
                "FM0001",
                f"`{shown}` is a directory, not a .fm file",
                None,
                help="pass the spec file itself, for example `spec.fm`",
            )
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            return None, error(
                "FM0003",
                f"`{shown}` is too large to be a spec ({size:,} bytes)",
                start,
                help='split it into files joined with `import "file.fm"`',
            )
        data = path.read_bytes()
    except FileNotFoundError:
        return None, error(
            "FM0001",
            f"cannot read `{shown}`: no such file",
            None,
            help="check the path; specs usually end in `.fm`",
        )
    except OSError as exc:
        return None, error("FM0001", f"cannot read `{shown}`: {exc.strerror or exc}", None)
    if b"\x00" in data:
        return None, error(
            "FM0002",
            f"`{shown}` is a binary file, not a .fm spec",
            start,
            help="pass a UTF-8 text file",
        )
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = Span(shown, line, column, line, column + 1, exc.start, exc.start + 1)
        return None, error(
            "FM0002",
            f"`{shown}` is not valid UTF-8 (byte {exc.start})",
            bad,
            "invalid byte",
            help="save the file as UTF-8",
        )


class Loader:
    """Loads root files and, transitively, every imported file and stdlib module."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.stack: list[str] = []

    def load_root(self, path: Path) -> None:
        self._load(resolved(path), display_path(path), stdlib=False, importer=None)

    def load_text(self, text: str, shown: str, base: Path) -> None:
        self._parse_and_import(text, shown, base, stdlib=False)

    def _load(self, path: Path, shown: str, stdlib: bool, importer: Label | None) -> str | None:
        key = shown
        if key in self.stack:
            self._cycle(key, importer)
            return None
        if key in self.program.files:
            return key
        text, problem = read_source(path, shown)
        if problem is not None:
            if importer is not None and problem.code == "FM0001":
                problem = error(
                    "FM0202",
                    f"imported file `{shown}` cannot be read",
                    importer.span,
                    "imported here",
                    help="check the path, relative to this file",
                )
            self.program.sink.add(problem)
            return None
        assert text is not None
        self._parse_and_import(text, key, path.parent, stdlib)
        return key

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

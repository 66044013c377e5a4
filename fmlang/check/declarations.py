"""Every name is declared once per file scope; deployments and constraints name a target."""

from __future__ import annotations

from fmlang.check.program import Program, Symbol, own_symbols
from fmlang.diagnostics import Label, error


def check_unique_names(program: Program) -> None:
    for source in program.user_files():
        seen: dict[str, Symbol] = {}
        for symbol in own_symbols(source):
            first = seen.get(symbol.name)
            if first is None:
                seen[symbol.name] = symbol
                continue
            program.sink.add(
                error(
                    "FM0205",
                    f"`{symbol.name}` is declared twice",
                    symbol.span,
                    f"this {symbol.kind} reuses the name",
                    help="give each declaration its own name",
                    related=(Label(first.span, f"first declared here as a {first.kind}", False),),
                )
            )
        _check_imports_shadowed(program, source.path, seen)


def _check_imports_shadowed(program: Program, file: str, own: dict[str, Symbol]) -> None:
    """A declaration may not take the name of something an import brought into the file."""
    for name, imported_at in program.imported.get(file, {}).items():
        if name in own:
            program.sink.add(
                error(
                    "FM0205",
                    f"`{name}` is both imported and declared here",
                    own[name].span,
                    "declared here",
                    help="rename the declaration, or drop the import",
                    related=(Label(imported_at, f"`{name}` is imported here", False),),
                )
            )

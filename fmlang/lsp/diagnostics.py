"""fmc diagnostics → LSP diagnostics: the primary label gives the range, every other label
(each line of an unsat core, the first declaration of a duplicate) a related location."""

from __future__ import annotations

from lsprotocol import types

from fmlang.diagnostics import Diagnostic, Severity, Span
from fmlang.lsp.documents import Snapshot
from fmlang.syntax import ast

SOURCE = "fmc"
SEVERITY = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
    Severity.NOTE: types.DiagnosticSeverity.Information,
}


def to_lsp(snapshot: Snapshot) -> list[types.Diagnostic]:
    return [convert(snapshot, d) for d in snapshot.diagnostics]


def convert(snapshot: Snapshot, diagnostic: Diagnostic) -> types.Diagnostic:
    primary = diagnostic.primary_span
    elsewhere = primary is not None and primary.file != snapshot.file
    related = [_related(snapshot, label.span, label.text) for label in diagnostic.labels]
    if not elsewhere:
        related = [
            r
            for r, label in zip(related, diagnostic.labels, strict=True)
            if not label.primary or label.span is not primary
        ]
    return types.Diagnostic(
        range=_range(snapshot, primary),
        message=_message(diagnostic, primary if elsewhere else None),
        severity=SEVERITY[diagnostic.severity],
        code=diagnostic.code,
        source=SOURCE,
        related_information=related or None,
    )


def _range(snapshot: Snapshot, primary: Span | None) -> types.Range:
    """The primary label's range; for a problem in another file, the import that brought
    that file in (or the first line when none did)."""
    if primary is None:
        return types.Range(types.Position(0, 0), types.Position(0, 0))
    if primary.file == snapshot.file:
        return snapshot.lines().range(primary)
    importer = _import_of(snapshot, primary.file)
    if importer is not None:
        return snapshot.lines().range(importer)
    return types.Range(types.Position(0, 0), types.Position(0, 0))


def _import_of(snapshot: Snapshot, file: str) -> Span | None:
    module = snapshot.result.program.files.get(snapshot.file)
    origins = snapshot.result.program.imported.get(snapshot.file, {})
    for name, span in origins.items():
        symbol = snapshot.result.program.lookup(snapshot.file, name)
        if symbol is not None and symbol.file == file:
            return span
    items = module.module.items if module else ()
    imports = [item for item in items if isinstance(item, ast.ImportFile)]
    return imports[0].span if len(imports) == 1 else None


def _message(diagnostic: Diagnostic, elsewhere: Span | None) -> str:
    lines = [diagnostic.message]
    if elsewhere is not None:
        lines[0] = f"{elsewhere.file}:{elsewhere.line}:{elsewhere.column}: {diagnostic.message}"
    lines.extend(f"note: {note}" for note in diagnostic.notes)
    if diagnostic.help:
        lines.append(f"help: {diagnostic.help}")
    return "\n".join(lines)


def _related(snapshot: Snapshot, span: Span, text: str) -> types.DiagnosticRelatedInformation:
    location = types.Location(snapshot.uri_of(span.file), snapshot.lines(span.file).range(span))
    return types.DiagnosticRelatedInformation(location, text or "see here")

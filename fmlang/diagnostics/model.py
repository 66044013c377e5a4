"""The one data type every stage reports user-facing problems with."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Span:
    """A region of one source file. Lines and columns are 1-based; offsets are 0-based."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
        }


@dataclass(frozen=True, slots=True)
class Label:
    span: Span
    text: str = ""
    primary: bool = True


@dataclass(frozen=True, slots=True)
class Fix:
    """A machine-applicable suggestion: replace `span` with `text` (the editor's quick fix)."""

    title: str
    span: Span
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "span": self.span.to_json(), "text": self.text}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    labels: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()
    help: str | None = None
    fixes: tuple[Fix, ...] = ()  # not in to_json (the CLI's JSON stays as it was)

    @property
    def primary_span(self) -> Span | None:
        for label in self.labels:
            if label.primary:
                return label.span
        return self.labels[0].span if self.labels else None

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "labels": [
                {"span": lb.span.to_json(), "text": lb.text, "primary": lb.primary}
                for lb in self.labels
            ],
            "notes": list(self.notes),
            "help": self.help,
        }


def error(
    code: str,
    message: str,
    span: Span | None = None,
    label: str = "",
    *,
    help: str | None = None,
    notes: tuple[str, ...] = (),
    related: tuple[Label, ...] = (),
) -> Diagnostic:
    labels = ((Label(span, label, True),) if span else ()) + related
    return Diagnostic(Severity.ERROR, code, message, labels, notes, help)


def warning(
    code: str, message: str, span: Span | None = None, label: str = "", *, help: str | None = None
) -> Diagnostic:
    labels = (Label(span, label, True),) if span else ()
    return Diagnostic(Severity.WARNING, code, message, labels, (), help)


@dataclass
class DiagnosticSink:
    """Collects diagnostics from passes that report and keep going."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, diagnostic: Diagnostic) -> None:
        self.items.append(diagnostic)

    def extend(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.items.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.items)

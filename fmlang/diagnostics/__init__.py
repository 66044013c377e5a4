"""Diagnostics: one type, rendered as rich excerpts, short lines, JSON and LSP."""

from fmlang.diagnostics.model import (
    Diagnostic,
    DiagnosticSink,
    Fix,
    Label,
    Severity,
    Span,
    error,
    warning,
)

__all__ = ["Diagnostic", "DiagnosticSink", "Fix", "Label", "Severity", "Span", "error", "warning"]

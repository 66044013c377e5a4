"""Diagnostic codes FM07xx: data pipelines, labeling functions, the label model, access and audit.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

DATA_CODES: dict[str, Code] = {}

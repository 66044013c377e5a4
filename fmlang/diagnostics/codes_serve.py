"""Diagnostic codes FM10xx: serving and deployment manifests.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

SERVE_CODES: dict[str, Code] = {}

"""Diagnostic codes FM08xx: adapters, training, evaluation gates, merging and the registry.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

TRAIN_CODES: dict[str, Code] = {}

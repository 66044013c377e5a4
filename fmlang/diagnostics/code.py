"""One entry of the diagnostic code registry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    title: str
    explanation: str
    io: bool = False  # usage or I/O problem (exit 2) rather than an error in the spec (exit 1)

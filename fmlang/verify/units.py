"""Figures as people read them: 14.2 GiB, 35 ms, 20.4 req/s, 3.04 USD/h."""

from __future__ import annotations


def show(value: float, unit: str) -> str:
    if unit == "bytes":
        for name, size in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
            if abs(value) >= size:
                return f"{value / size:.3g} {name}"
        return f"{value:.0f} B"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    return f"{value:.3g} {unit}"

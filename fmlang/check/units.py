"""Units of measure: every quantity is normalised to one base unit per dimension."""

from __future__ import annotations

from dataclasses import dataclass

# dimension → {unit: factor to the base unit}; the base unit is listed first.
DIMENSIONS: dict[str, dict[str, float]] = {
    "time": {"s": 1.0, "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "min": 60.0, "h": 3600.0},
    "bytes": {
        "B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
        "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30, "TiB": 2.0**40,
    },
    "bandwidth": {
        "B/s": 1.0, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12,
        "MiB/s": 2.0**20, "GiB/s": 2.0**30,
    },
    "compute": {"FLOPS": 1.0, "GFLOPS": 1e9, "TFLOPS": 1e12, "PFLOPS": 1e15},
    "money": {"USD": 1.0},
    "money_rate": {"USD/h": 1.0},
    "token_rate": {"tok/s": 1.0},
    "request_rate": {"req/s": 1.0, "req/min": 1 / 60},
    "ratio": {"%": 0.01},
}  # fmt: skip

DIMENSION_NAMES = {
    "time": "a duration (`30ms`, `2s`)",
    "bytes": "a size (`512MiB`, `2GiB`)",
    "bandwidth": "a bandwidth (`900GB/s`)",
    "compute": "a compute rate (`312TFLOPS`)",
    "money": "an amount (`100USD`)",
    "money_rate": "a cost rate (`4.5USD/h`)",
    "token_rate": "a token rate (`200tok/s`)",
    "request_rate": "a request rate (`50req/s`)",
    "ratio": "a percentage (`5%`) or a fraction (`0.05`)",
}

UNIT_DIMENSION = {unit: dim for dim, units in DIMENSIONS.items() for unit in units}


@dataclass(frozen=True, slots=True)
class Measured:
    """A quantity in its dimension's base unit."""

    value: float
    dimension: str

    @property
    def base_unit(self) -> str:
        return next(iter(DIMENSIONS[self.dimension]))


def normalise(magnitude: float, unit: str) -> Measured | None:
    dimension = UNIT_DIMENSION.get(unit)
    if dimension is None:
        return None
    return Measured(magnitude * DIMENSIONS[dimension][unit], dimension)


def all_units() -> list[str]:
    return list(UNIT_DIMENSION)

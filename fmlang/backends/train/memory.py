"""Measured training memory: the peak of one training run on this machine.

On CUDA: torch's peak allocated and reserved bytes since the start of training (the peak
statistics are reset then, so the weights already resident count and nothing before does),
and the device's total memory. On CPU: the process's peak resident set during training
(VmHWM, reset by writing "5" to /proc/self/clear_refs as training starts) minus its
resident set before the model was loaded and after torch, transformers and peft were
imported (VmRSS), so it counts the weights, activations, gradients and optimizer state as
the verifier's peak does; where /proc cannot be reset or read, the process-lifetime
`ru_maxrss` stands in (an upper bound, marked `"source": "ru_maxrss"`).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 2.0**30
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int | None:
    """`VmRSS`/`VmHWM` of this process from /proc, in bytes (None where there is no /proc)."""
    try:
        for line in STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        CLEAR_REFS.write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def _ru_maxrss() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _libraries_rss() -> int | None:
    """VmRSS once torch, transformers and peft are imported: their code is not training
    memory, so the baseline is taken after them."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    return _status_bytes("VmRSS")


@dataclass
class MemoryProbe:
    """Created before the model loads (the baseline); `training_started` as training
    begins; `measured` after it."""

    baseline_rss: int | None = field(default_factory=_libraries_rss)
    hwm_reset: bool = False

    def training_started(self) -> None:
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self.hwm_reset = _reset_hwm()

    def measured(self) -> dict[str, Any]:
        return self._cuda() if _cuda() else self._cpu()

    def _cuda(self) -> dict[str, Any]:
        import torch

        _, total = torch.cuda.mem_get_info()
        return {
            "device": "cuda",
            "metric": "allocated",
            "peak": int(torch.cuda.max_memory_allocated()),
            "peak_allocated": int(torch.cuda.max_memory_allocated()),
            "peak_reserved": int(torch.cuda.max_memory_reserved()),
            "device_total": int(total),
        }

    def _cpu(self) -> dict[str, Any]:
        hwm = _status_bytes("VmHWM") if self.hwm_reset else None
        source = "VmHWM" if hwm is not None else "ru_maxrss"
        peak_rss = hwm if hwm is not None else _ru_maxrss()
        baseline = self.baseline_rss or 0
        return {
            "device": "cpu",
            "metric": "RSS",
            "peak": max(peak_rss - baseline, 0),
            "peak_rss": peak_rss,
            "baseline_rss": baseline,
            "source": source,
        }


def memory_callback(probe: MemoryProbe) -> Any:
    """A TrainerCallback that starts the probe's peak as training begins."""
    from transformers import TrainerCallback

    class MeasureMemory(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            probe.training_started()

    return MeasureMemory()


def summary_line(memory: dict[str, Any]) -> str:
    """`memory: measured X GiB peak (allocated), predicted Y GiB on HW` for the run log."""
    measured, predicted = memory.get("measured") or {}, memory.get("predicted")
    shown = f"{measured['peak'] / GIB:.3f} GiB peak ({measured['metric']})" if measured else "-"
    if predicted:
        guess = f"predicted {predicted['peak'] / GIB:.3f} GiB on {predicted['hardware']}"
    else:
        guess = "no prediction (verify.json has no training memory for this model)"
    return f"memory: measured {shown}, {guess}"

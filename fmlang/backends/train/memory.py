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


def _bytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())


def _state_bytes(optimizer: Any) -> int:
    """Bytes of every tensor in the optimizer's state (the inner optimizers' too, when the
    optimizer steps in the backward pass; accelerate's wrapper unwrapped)."""
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    optimizers = getattr(inner, "inner", None) or [inner]
    return sum(
        _bytes(value)
        for opt in optimizers
        for state in getattr(opt, "state", {}).values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


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


PROFILED_STEPS = 2  # the peak is reached by the second step, once optimizer state exists


@dataclass
class MemoryProbe:
    """Created before the model loads (the baseline); `training_started` as training
    begins; `measured` after it. On CPU it also reads torch's own allocations over the first
    PROFILED_STEPS optimizer steps from the profiler's memory events (the model's weights
    and buffers, alive before, plus the peak of the running sum): the figure the cost model
    predicts, which the resident set overstates by the C allocator's slack and everything
    outside torch."""

    baseline_rss: int | None = field(default_factory=_libraries_rss)
    hwm_reset: bool = False
    torch_peak: int | None = None
    terms: dict[str, int] = field(default_factory=dict)
    _profiler: Any = None
    _resident: int = 0

    def count_terms(self, model: Any, optimizer: Any) -> None:
        """The terms that can be read off the objects once a step has run: frozen weights
        (and buffers), trainable weights, and the optimizer's state tensors."""
        if self.terms or model is None:
            return
        frozen = sum(_bytes(p) for p in model.parameters() if not p.requires_grad)
        self.terms = {
            "weights": frozen + sum(_bytes(b) for b in model.buffers()),
            "trainable": sum(_bytes(p) for p in model.parameters() if p.requires_grad),
            "optimizer": _state_bytes(optimizer),
        }

    def steps_started(self, model: Any) -> None:
        if _cuda() or self._profiler is not None:
            return
        from torch.profiler import ProfilerActivity, profile

        tensors = [*model.parameters(), *model.buffers()]
        self._resident = sum(t.numel() * t.element_size() for t in tensors)
        self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._profiler.__enter__()

    def steps_done(self) -> None:
        if self._profiler is None or self.torch_peak is not None:
            return
        self._profiler.__exit__(None, None, None)
        events = self._profiler.profiler.kineto_results.events()
        running = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            if event.name() == "[memory]":
                running += event.nbytes()
                peak = max(peak, running)
        self.torch_peak = self._resident + peak
        self._profiler = None

    def training_started(self) -> None:
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self.hwm_reset = _reset_hwm()

    def measured(self) -> dict[str, Any]:
        found = self._cuda() if _cuda() else self._cpu()
        return {**found, "terms": dict(self.terms)}

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
        rss = max(peak_rss - baseline, 0)
        torch_peak = self.torch_peak
        return {
            "device": "cpu",
            "metric": "allocated" if torch_peak is not None else "RSS",
            "peak": torch_peak if torch_peak is not None else rss,
            "peak_allocated": torch_peak,
            "peak_rss_increase": rss,
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

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0:
                probe.steps_started(kwargs["model"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            probe.count_terms(kwargs.get("model"), kwargs.get("optimizer"))
            if state.global_step >= PROFILED_STEPS:
                probe.steps_done()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            probe.steps_done()

    return MeasureMemory()


def summary_line(memory: dict[str, Any]) -> str:
    """`memory: measured X GiB peak (allocated), predicted Y GiB on HW` for the run log."""
    measured, predicted = memory.get("measured") or {}, memory.get("predicted")
    shown = f"{measured['peak'] / GIB:.3f} GiB peak ({measured['metric']})" if measured else "-"
    if predicted:
        # torch's allocated peak against the predicted allocated peak; the device total
        # (allocator reserve and CUDA context added) is what the verdict used
        same = predicted.get("allocated", predicted["peak"])
        guess = (
            f"predicted {same / GIB:.3f} GiB allocated "
            f"({predicted['peak'] / GIB:.3f} GiB in all) on {predicted['hardware']}"
        )
    else:
        guess = "no prediction (verify.json has no training memory for this model)"
    terms = _terms_line(measured.get("terms") or {}, (predicted or {}).get("per_device") or {})
    return f"memory: measured {shown}, {guess}" + (f"; {terms}" if terms else "")


def _terms_line(measured: dict[str, int], predicted: dict[str, float]) -> str:
    """`weights 86.6 MiB (predicted 86.6 MiB), …` for the terms measured directly."""
    shown = []
    for term, value in measured.items():
        guess = predicted.get(term, 0.0)
        shown.append(f"{term} {value / 2**20:.1f} MiB (predicted {guess / 2**20:.1f} MiB)")
    return ", ".join(shown)

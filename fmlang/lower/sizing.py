"""How much memory a serving container asks for, and how large the build folder's volume is.

Memory of an `fmc serve` container = the cost model's serving footprint of the model (the
verifier's estimate in verify.json when a memory constraint gave one, else the same formula
at the chosen knobs: weights, resident adapters, KV cache, activations) + the server
process's own resident memory, which the cost model does not count (`SERVE_BASELINE_BYTES`,
measured). That sum is the request; the limit adds `MEMORY_LIMIT_HEADROOM` on top, capped at
the hardware profile's memory. A request the profile cannot hold is FM1038.

vLLM containers (GPU targets) request the footprint as host memory, through which the
weights pass as they load, with no memory limit: vLLM's own process baseline has not been
measured here, so no limit is set that could kill a healthy server.

The build folder's PersistentVolumeClaim holds what the server reads from it: the served
adapters (peft saves them in fp32), merged weights or `local(...)` base weights at the base
model's dtype, plus `CLAIM_SPARE_BYTES` for tokenizer files, configs and server.json,
rounded up to whole GiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmlang.diagnostics import Span
from fmlang.errors import StageError
from fmlang.ir.nodes import Hardware
from fmlang.lower.server_config import ServedModel, fail
from fmlang.verify import costmodel as cm

# The server process's own resident memory, measured: see the cost model's constant.
SERVE_BASELINE_BYTES = cm.SERVE_PROCESS_BYTES
# Limit = request x 1.25: the request is what the server needs; the extra quarter (a stated
# margin, not a measurement) absorbs allocator fragmentation, request bodies and library
# versions other than the measured ones before the kernel kills the pod.
MEMORY_LIMIT_HEADROOM = 1.25
CLAIM_SPARE_BYTES = 256 * 2**20  # a chosen allowance; Llama 3's tokenizer.json is 9 MB


@dataclass(frozen=True)
class Memory:
    """Bytes a container requests, and its limit (None: no memory limit)."""

    request: float
    limit: float | None


def mebibytes(count: float) -> int:
    return math.ceil(count / 2**20)


def hardware_memory(hardware: Hardware | None) -> float | None:
    if hardware is None or hardware.memory is None:
        return None
    return hardware.memory.value * (hardware.devices or 1)


def serve_memory(
    served: ServedModel, model_bytes: float | None, hardware: Hardware | None, span: Span | None
) -> Memory | None:
    """An `fmc serve` container's memory: footprint + process baseline, and the limit;
    the hardware's memory when the model has no footprint; None when neither is known."""
    capacity = hardware_memory(hardware)
    if model_bytes is None:
        return None if capacity is None else Memory(capacity, capacity)
    request = model_bytes + SERVE_BASELINE_BYTES
    if hardware is not None and capacity is not None and request > capacity:
        raise _does_not_fit(served, model_bytes, hardware, capacity, span)
    limit = request * MEMORY_LIMIT_HEADROOM
    return Memory(request, min(limit, capacity) if capacity is not None else limit)


def _does_not_fit(
    served: ServedModel, model_bytes: float, hardware: Hardware, capacity: float, span: Span | None
) -> StageError:
    model, process = mebibytes(model_bytes), mebibytes(SERVE_BASELINE_BYTES)
    return fail(
        "FM1038",
        f"`{served.deploy}` needs {mebibytes(model_bytes + SERVE_BASELINE_BYTES)} MiB per "
        f"replica (model {model} MiB + `fmc serve` process {process} MiB) but "
        f"`{hardware.name}` has {mebibytes(capacity)} MiB",
        span,
        "the server does not fit this hardware",
        "choose hardware with more memory, a smaller serving batch, context or adapter "
        "count, or quantize the weights",
    )


def vllm_memory(model_bytes: float | None, hardware: Hardware | None) -> Memory | None:
    """vLLM's host memory request: the footprint, else the hardware's memory; no limit."""
    request = model_bytes if model_bytes is not None else hardware_memory(hardware)
    return None if request is None else Memory(request, None)


def claim_gibibytes(served: ServedModel) -> int:
    """Whole GiB for the build folder's claim. The checker refuses a base model without a
    parameter count (FM0339), so the files' size is always known here."""
    assert served.artifact_bytes is not None, "a checked spec states every base's params"
    return math.ceil((served.artifact_bytes + CLAIM_SPARE_BYTES) / 2**30)

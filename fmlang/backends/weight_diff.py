"""Per-layer weight deltas between two registered adapters, for `fmc diff`, without torch.

The adapter files are read with `safetensors.numpy` (bfloat16 tensors, which numpy has no
type for, are widened to float32 from their raw bytes). For each module:

- LoRA (`lora_A`/`lora_B`, embeddings' `lora_embedding_A`/`_B`): the update ΔW = s·B·A
  (s = alpha / rank, or alpha / sqrt(rank) with rsLoRA; `alpha_pattern` per module). Its
  Frobenius norm and the norm of ΔW_A - ΔW_B come from r×r Gram matrices in float64
  (‖s₁B₁A₁ - s₂B₂A₂‖² = ‖ΔW₁‖² + ‖ΔW₂‖² - 2·s₁s₂·tr(B₁ᵀB₂·A₂A₁ᵀ)), so nothing of size
  out×in is formed and adapters of different ranks compare;
- a `fisher_mask` sparse diff (`sparse_diff.safetensors`): each parameter's update from its
  indices and values, compared where the indices meet;
- any other saved tensor (a head trained in full, DoRA magnitudes): the tensors themselves.

Rows say `norm_a`, `norm_b`, `diff` (the norm of the difference) and `relative` (`diff`
over the larger norm), as `fmlang.backends.merge.LayerDelta` (the torch version) does.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

SAFETENSORS = "adapter_model.safetensors"
SPARSE = "sparse_diff.safetensors"
PREFIX = "base_model.model."
LORA_PAIRS = (("lora_A.weight", "lora_B.weight"), ("lora_embedding_A", "lora_embedding_B"))
RAW_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}  # fmt: skip

Update = tuple[str, Any]  # ("lora", (a, b, scale)) | ("sparse", (indices, values)) | ("tensor", x)


def weight_deltas(dir_a: Path, dir_b: Path) -> list[dict[str, Any]]:
    """One row per module or tensor of either adapter, sorted by kind then name."""
    updates_a, updates_b = updates(dir_a), updates(dir_b)
    rows = [
        _row(name, updates_a.get(name), updates_b.get(name))
        for name in sorted(set(updates_a) | set(updates_b))
    ]
    order = {"lora": 0, "sparse": 0, "tensor": 1}
    return sorted(rows, key=lambda r: (order.get(r["kind"], 2), r["name"]))


def updates(folder: Path) -> dict[str, Update]:
    """Every module's update in an adapter folder (see the module docstring)."""
    config = _config(folder)
    if (folder / SPARSE).is_file():
        return _sparse_updates(folder / SPARSE)
    if not (folder / SAFETENSORS).is_file():
        raise ValueError(f"no {SAFETENSORS} in {folder} (pickled weights need torch)")
    tensors = read_tensors(folder / SAFETENSORS)
    out: dict[str, Update] = {}
    rest = dict(tensors)
    for key in sorted(tensors):
        for a_suffix, b_suffix in LORA_PAIRS:
            module = key[: -len(a_suffix) - 1]
            b_key = f"{module}.{b_suffix}"
            if not key.endswith("." + a_suffix) or b_key not in tensors:
                continue
            a, b = rest.pop(key), rest.pop(b_key)
            if a_suffix.startswith("lora_embedding"):  # stored as Aᵀ·Bᵀ: ΔWᵀ has equal norms
                a, b = b.T, a.T
            a2 = a.reshape(a.shape[0], -1).astype(np.float64)
            b2 = b.reshape(b.shape[0], -1).astype(np.float64)
            rank = min(a2.shape[0], b2.shape[1])
            out[module.removeprefix(PREFIX)] = ("lora", (a2, b2, _scale(config, module, rank)))
    for key, value in rest.items():
        out[key.removeprefix(PREFIX)] = ("tensor", value.astype(np.float64))
    return out


def read_tensors(path: Path) -> dict[str, Any]:
    """A safetensors file's tensors as numpy arrays (bfloat16 widened to float32)."""
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except TypeError:  # a dtype numpy lacks (bfloat16): decode the file's raw bytes
        return _read_raw(path)


def _read_raw(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    body = memoryview(data)[8 + size :]
    out: dict[str, Any] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        raw = body[start:end]
        if entry["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=RAW_DTYPES[entry["dtype"]])
        out[name] = array.reshape(entry["shape"])
    return out


def _sparse_updates(path: Path) -> dict[str, Update]:
    """A fisher_mask diff: (indices, values) per parameter, whole tensors for `.full`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        shapes = json.loads((handle.metadata() or {}).get("shapes", "{}"))
    tensors = read_tensors(path)
    out: dict[str, Update] = {}
    for key, tensor in tensors.items():
        name, _, part = key.rpartition(".")
        if part == "full":
            out[name] = ("tensor", tensor.astype(np.float64))
        elif part == "indices":
            values = tensors[f"{name}.values"].astype(np.float64)
            out[name] = ("sparse", (tensor.astype(np.int64), values, tuple(shapes.get(name, ()))))
    return out


def _config(folder: Path) -> dict[str, Any]:
    try:
        document = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    """peft's LoRA scale for `module`: alpha (or its `alpha_pattern` override) over the
    rank, or over its square root with rsLoRA."""
    alpha = config.get("lora_alpha", 8)
    for key, value in (config.get("alpha_pattern") or {}).items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            alpha = value
            break
    if config.get("use_rslora"):
        return float(alpha) / math.sqrt(rank)
    return float(alpha) / rank


# ---- norms ----------------------------------------------------------------------------


def _row(name: str, a: Update | None, b: Update | None) -> dict[str, Any]:
    kind = (a or b or ("tensor", None))[0]
    row: dict[str, Any] = {"name": name, "kind": kind, "norm_a": None, "norm_b": None, "diff": None,
           "relative": None, "note": ""}  # fmt: skip
    row["norm_a"] = _norm(a) if a is not None else None
    row["norm_b"] = _norm(b) if b is not None else None
    if a is None or b is None:
        row.update(diff=row["norm_a"] if b is None else row["norm_b"], relative=1.0)
        row["note"] = "only in A" if b is None else "only in B"
        return row
    if a[0] != b[0]:
        row.update(kind=f"{a[0]}/{b[0]}", note="different kinds of update")
        return row
    diff = _diff(a, b)
    if diff is None:
        row["note"] = f"shapes {_shape(a)} and {_shape(b)}"
        return row
    largest = max(row["norm_a"] or 0.0, row["norm_b"] or 0.0)
    row.update(diff=diff, relative=diff / largest if largest else 0.0)
    return row


def _norm(update: Update) -> float:
    kind, value = update
    if kind == "lora":
        a, b, scale = value
        return float(abs(scale) * math.sqrt(max(float(np.sum((b.T @ b) * (a @ a.T))), 0.0)))
    if kind == "sparse":
        return float(np.linalg.norm(value[1]))
    return float(np.linalg.norm(value))


def _shape(update: Update) -> tuple[int, ...]:
    kind, value = update
    if kind == "lora":
        return (value[1].shape[0], value[0].shape[1])
    if kind == "sparse":
        return tuple(value[2])
    return tuple(value.shape)


def _diff(a: Update, b: Update) -> float | None:
    """‖update_a - update_b‖, or None when their shapes differ."""
    if _shape(a) != _shape(b):
        return None
    if a[0] == "lora":
        (a1, b1, s1), (a2, b2, s2) = a[1], b[1]
        cross = float(np.sum((b1.T @ b2) * (a1 @ a2.T)))  # tr(B₁ᵀB₂·A₂A₁ᵀ)
        squared = _norm(a) ** 2 + _norm(b) ** 2 - 2 * s1 * s2 * cross
        return math.sqrt(max(squared, 0.0))
    if a[0] == "sparse":
        (ia, va, _), (ib, vb, _) = a[1], b[1]
        _, at, bt = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
        only = float(va @ va - va[at] @ va[at] + vb @ vb - vb[bt] @ vb[bt])
        both = va[at] - vb[bt]
        return math.sqrt(max(only + float(both @ both), 0.0))
    return float(np.linalg.norm(a[1] - b[1]))

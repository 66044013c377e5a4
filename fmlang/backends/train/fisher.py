"""FishMask sparse updates: Fisher information, the top-k mask, and the stored sparse diff.

FishMask (Sung et al. 2021, "Training Neural Networks with Fixed Sparse Masks") estimates
each parameter's empirical Fisher information on a sample of the training data -- the sum,
over the sampled rows, of the squared gradient of the row's log-likelihood of its own
label -- and trains only the `k` parameters where it is largest, `k = density x` the
base model's parameters (every parameter of the base counts, embeddings included, as in the
paper; the new classification head of a `classify` model trains in full beside the mask,
as it does beside a LoRA adapter, and is not counted in `k`). The mask is global: one
top-k over every tensor, not a quota per tensor.

The update is stored as a sparse diff from the base, `sparse_diff.safetensors`:

- `<parameter>.indices`: flat indices into the parameter (ascending), int32 (int64 for a
  tensor of 2^31 elements or more);
- `<parameter>.values`: fp32, the trained value minus the base value at each index;
- `<parameter>.full`: a tensor trained in full (the classification head), as trained;

with the parameter shapes in the safetensors metadata (`shapes`, JSON), and beside it the
`adapter_config.json` fmc writes for every adapter (`peft_type` `FISHER_MASK`, `density`,
`num_samples`, and after training `selected` and `base_params`). PEFT does not load it;
`apply_diff` does, for evaluation.

Merging sparse diffs (`merge_diffs`) adds them exactly where they do not overlap; where
several diffs change one entry, it resolves the conflict as TIES does (Yadav et al. 2023):
the sign with the larger summed magnitude is elected, the values of that sign are kept and
averaged, the others dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.atomic import json_text
from fmlang.diagnostics import Span, error
from fmlang.errors import StageError

PEFT_TYPE = "FISHER_MASK"
DIFF_FILE = "sparse_diff.safetensors"
CONFIG_FILE = "adapter_config.json"


def is_fisher_mask(config: Mapping[str, Any] | None) -> bool:
    """Whether an adapter config (a job's, or a saved `adapter_config.json`) is FishMask's."""
    return config is not None and config.get("peft_type") == PEFT_TYPE


def is_fisher_folder(folder: Path) -> bool:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return is_fisher_mask(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class SparseEntry:
    """One parameter's part of a diff: flat `indices` and `values` (torch tensors)."""

    indices: Any
    values: Any


@dataclass
class SparseDiff:
    """A sparse diff: per parameter, sparse entries or (for a head) the full tensor."""

    sparse: dict[str, SparseEntry]
    full: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]

    @property
    def changed(self) -> int:
        """Parameters the sparse part changes."""
        return sum(int(e.indices.numel()) for e in self.sparse.values())


# ---- Fisher information and the mask -----------------------------------------------


def candidates(model: Any, head: Iterable[str]) -> dict[str, Any]:
    """The base parameters the mask chooses from: all but the trained-in-full head modules
    (a parameter tied to another is listed once, under its first name)."""
    prefixes = tuple(head)
    chosen: dict[str, Any] = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        if any(part in prefixes for part in parts):
            continue
        chosen[name] = parameter
    return chosen


def fisher_information(
    params: Mapping[str, Any], rows: Iterable[dict[str, Any]], loss_of: Callable[[Any], Any]
) -> dict[str, Any]:
    """Per parameter, the sum over `rows` (each one batch of one row) of the squared gradient
    of `loss_of(row)`, the row's negative log-likelihood of its label; in fp32."""
    import torch

    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    for row in rows:
        for p in params.values():
            p.grad = None
        loss_of(row).backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name].add_(p.grad.detach().float().square())
    for p in params.values():
        p.grad = None
    return fisher


def top_k_mask(fisher: Mapping[str, Any], k: int) -> dict[str, Any]:
    """The flat indices (ascending, int64) of the `k` largest Fisher values over every
    tensor at once; ties go to the earlier tensor (in `fisher`'s order) and lower index."""
    import torch

    names = list(fisher)
    flat = torch.cat([fisher[n].reshape(-1) for n in names])
    k = max(0, min(k, flat.numel()))
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    mask: dict[str, Any] = {}
    start = 0
    for name in names:
        size = fisher[name].numel()
        inside = order[(order >= start) & (order < start + size)] - start
        if inside.numel():
            mask[name] = torch.sort(inside).values.to(torch.int64)
        start += size
    return mask


def with_deltas(base: Any, indices: Any, delta: Any) -> Any:
    """`base` with `delta` added at the flat `indices` (the sum in fp32, then cast back to
    the base's dtype), differentiable in `delta` only."""
    flat = base.detach().reshape(-1)
    summed = (flat[indices].float() + delta).to(base.dtype)
    return flat.index_put((indices,), summed).view_as(base)


# ---- the stored diff ------------------------------------------------------------------


def save_diff(folder: Path, diff: SparseDiff) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for name, entry in sorted(diff.sparse.items()):
        narrow = math.prod(diff.shapes.get(name, (2**31,))) < 2**31  # int32 when they fit
        dtype = torch.int32 if narrow else torch.int64
        tensors[f"{name}.indices"] = entry.indices.to("cpu", dtype).contiguous()
        tensors[f"{name}.values"] = entry.values.detach().float().to("cpu").contiguous()
    for name, tensor in sorted(diff.full.items()):
        tensors[f"{name}.full"] = tensor.detach().to("cpu").contiguous()
    shapes = {n: list(s) for n, s in sorted(diff.shapes.items())}
    save_file(tensors, str(folder / DIFF_FILE), metadata={"shapes": json.dumps(shapes)})


def load_diff(folder: Path, span: Span | None = None, model: str = "") -> SparseDiff:
    """The diff in `folder`; FM0870 when it is missing or not one fmc wrote."""
    from safetensors import safe_open

    path = folder / DIFF_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            shapes = {n: tuple(s) for n, s in json.loads(meta["shapes"]).items()}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise StageError(_unreadable(path, span, model, str(exc))) from exc
    sparse: dict[str, SparseEntry] = {}
    full: dict[str, Any] = {}
    for key, tensor in tensors.items():
        name, _, part = key.rpartition(".")
        if part == "full":
            full[name] = tensor
        elif part == "indices":
            sparse[name] = SparseEntry(tensor.long(), tensors[f"{name}.values"])
    return SparseDiff(sparse, full, shapes)


def _unreadable(path: Path, span: Span | None, model: str, why: str) -> Any:
    return error(
        "FM0870",
        f"cannot apply the fisher_mask update of `{model}`: {path} is not a sparse diff fmc wrote",
        span,
        "this model",
        help="retrain the model (`fmc run`), or restore the adapter folder from the registry",
        notes=(why.splitlines()[0] if why else "",),
    )


def apply_diff(model: Any, diff: SparseDiff, span: Span | None = None, name: str = "") -> Any:
    """`model` with the diff applied in place: base + values at the indices, heads replaced;
    FM0870 when a parameter is missing or its shape differs from the one trained."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, entry in diff.sparse.items():
            target = _target(params, key, diff.shapes.get(key), span, name)
            flat = target.data.view(-1)
            if entry.indices.numel() and int(entry.indices.max()) >= flat.numel():
                raise StageError(_unreadable(Path(key), span, name, "an index is out of range"))
            at = entry.indices.to(flat.device)  # as `with_deltas` computes it in training
            flat[at] = (flat[at].float() + entry.values.to(flat.device).float()).to(flat.dtype)
        for key, tensor in diff.full.items():
            target = _target(params, key, tuple(tensor.shape), span, name)
            target.data.copy_(tensor.to(target))
    return model


def _target(
    params: Mapping[str, Any], key: str, shape: tuple[int, ...] | None, span: Span | None, name: str
) -> Any:
    target = params.get(key)
    if target is None or (shape is not None and tuple(target.shape) != tuple(shape)):
        found = "missing" if target is None else f"shaped {tuple(target.shape)}"
        why = f"parameter {key}: the diff was trained on {shape}, the model's is {found}"
        raise StageError(_unreadable(Path(DIFF_FILE), span, name, why))
    return target


# ---- merges ---------------------------------------------------------------------------


def merge_entries(entries: list[SparseEntry], weights: list[float]) -> SparseEntry:
    """One parameter's merged sparse entry: weighted values add exactly where one diff
    changes an index; where several do, the sign with the larger summed magnitude wins and
    the agreeing weighted values are averaged (TIES' disjoint mean)."""
    import torch

    indices = torch.cat([e.indices for e in entries])
    values = torch.cat([e.values.float() * w for e, w in zip(entries, weights, strict=True)])
    union, slot = torch.unique(indices, sorted=True, return_inverse=True)
    total = torch.zeros(union.numel()).index_add_(0, slot, values)  # sign of the summed mass
    elected = torch.sign(total)
    agree = torch.sign(values) == elected[slot]
    kept = torch.zeros(union.numel()).index_add_(0, slot, torch.where(agree, values, 0.0))
    count = torch.zeros(union.numel()).index_add_(0, slot, agree.float())
    merged = torch.where(count > 0, kept / count.clamp(min=1), torch.zeros_like(kept))
    keep = merged != 0
    return SparseEntry(union[keep], merged[keep])


def merge_diffs(diffs: list[SparseDiff], weights: list[float] | None = None) -> SparseDiff:
    """The merged diff of several (heads cannot be merged: `merges.py` refuses them)."""
    weights = weights or [1.0] * len(diffs)
    names = sorted({n for d in diffs for n in d.sparse})
    sparse: dict[str, SparseEntry] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name in names:
        parts = [
            (d.sparse[name], w) for d, w in zip(diffs, weights, strict=True) if name in d.sparse
        ]
        sparse[name] = merge_entries([p for p, _ in parts], [w for _, w in parts])
        shapes[name] = next(d.shapes[name] for d in diffs if name in d.shapes)
    return SparseDiff(sparse, {}, shapes)


def merge_folders(
    recipe: Mapping[str, Any], parent_dirs: Mapping[str, Path], out_dir: Path,
    span: Span | None = None,
) -> Path:  # fmt: skip
    """The merge stage for fisher_mask parents: their diffs merged (`merge_diffs`, with the
    recipe's weights) into `out_dir`, with the first parent's config (FM0870 when a diff
    cannot be read; FM0871 when the parents were trained on different bases)."""
    import shutil

    names = [str(p["model"]) for p in recipe["parents"]]
    configs = [_config(parent_dirs[n]) for n in names]
    bases = {str(c.get("base_model_name_or_path")) for c in configs}
    if len(bases) > 1:
        raise StageError(
            error(
                "FM0871",
                f"cannot merge `{recipe['merge']}`: its fisher_mask parents were trained on "
                f"different base models ({', '.join(sorted(bases))})",
                span,
                "sparse diffs of different bases",
                help="train every merged model on one base model",
            )
        )
    diffs = [load_diff(parent_dirs[n], span, n) for n in names]
    merged = merge_diffs(diffs, [float(w) for w in recipe["weights"]])
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_diff(staging, merged)
    config = {**configs[0], "selected": merged.changed, "merged_from": names}
    (staging / CONFIG_FILE).write_text(json_text(dict(sorted(config.items()))), encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def _config(folder: Path) -> dict[str, Any]:
    try:
        document = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = None
    return document if isinstance(document, dict) else {}


def dense_updates(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """For `fmc diff`: each parameter's update as a dense tensor of its shape, and the
    tensors trained in full."""
    import math

    import torch

    diff = load_diff(folder)
    updates = {}
    for name, entry in diff.sparse.items():
        shape = diff.shapes[name]
        dense = torch.zeros(math.prod(shape)).index_add_(0, entry.indices, entry.values.float())
        updates[name] = dense.view(shape)
    return updates, dict(diff.full)

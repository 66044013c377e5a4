"""Reading peft LoRA adapter folders (`save_pretrained` layout): a cheap scan of the
config and tensor shapes at startup, and the full weights when the cache loads one."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fmlang.diagnostics import error
from fmlang.errors import StageError

PREFIX = "base_model.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")
SAFETENSORS = "adapter_model.safetensors"
PICKLED = "adapter_model.bin"


@dataclass(frozen=True)
class AdapterSpec:
    """What startup learns from an adapter folder without loading its weights."""

    name: str
    folder: Path
    ranks: Mapping[str, int]  # LoRA module name in the base model → rank
    shapes: Mapping[str, tuple[int, int]]  # LoRA module → (out, in) implied by B and A
    heads: Mapping[str, tuple[int, int]]  # modules_to_save Linear → weight shape (out, in)
    scales: Mapping[str, float]  # LoRA module → alpha / r (or alpha / sqrt(r) with rslora)


@dataclass(frozen=True)
class LoraWeights:
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]
    scale: float


@dataclass(frozen=True)
class AdapterWeights:
    """One adapter's tensors in host memory."""

    name: str
    lora: Mapping[str, LoraWeights]
    heads: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]]  # module → (weight, bias)

    @property
    def nbytes(self) -> int:
        tensors = [t for w in self.lora.values() for t in (w.a, w.b)]
        tensors += [t for w, b in self.heads.values() for t in (w, b) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


def _fail(code: str, name: str, folder: Path, what: str, fix: str) -> StageError:
    return StageError(error(code, f"adapter `{name}` ({folder}): {what}", help=fix))


def _read_config(name: str, folder: Path) -> dict[str, object]:
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(
            "FM1003",
            name,
            folder,
            f"cannot read adapter_config.json: {exc}",
            "point the adapter at a folder written by peft's save_pretrained",
        ) from exc
    if not isinstance(config, dict):
        raise _fail("FM1003", name, folder, "adapter_config.json is not an object", "re-save it")
    return config


def _check_supported(name: str, folder: Path, config: Mapping[str, object]) -> None:
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
    for flag in ("use_dora", "fan_in_fan_out", "lora_bias"):
        if config.get(flag):
            problems.append(f"{flag} is set")
    if config.get("bias", "none") != "none":
        problems.append(f"bias is {config.get('bias')!r}, not 'none'")
    if problems:
        raise _fail(
            "FM1004",
            name,
            folder,
            "unsupported for batched serving: " + "; ".join(problems),
            "serve plain LoRA adapters, or merge this adapter into the base model",
        )


def _pattern_value(patterns: object, module: str, default: float) -> float:
    """peft's rank/alpha patterns: a key matches a module name or a dotted suffix of it."""
    if isinstance(patterns, dict):
        for key, value in patterns.items():
            if re.fullmatch(rf"(.*\.)?{key}", module):
                return float(value)
    return default


def _scale(config: Mapping[str, object], module: str, rank: int) -> float:
    alpha_default = config.get("lora_alpha", 8)
    alpha = _pattern_value(config.get("alpha_pattern"), module, float(str(alpha_default)))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _weights_file(name: str, folder: Path) -> Path:
    for candidate in (SAFETENSORS, PICKLED):
        if (folder / candidate).is_file():
            return folder / candidate
    raise _fail(
        "FM1003",
        name,
        folder,
        f"neither {SAFETENSORS} nor {PICKLED} is there",
        "point the adapter at a folder written by peft's save_pretrained",
    )


def _key_shapes(name: str, path: Path) -> dict[str, tuple[int, ...]]:
    try:
        if path.name == SAFETENSORS:
            with safe_open(str(path), framework="pt") as handle:
                return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    except Exception as exc:  # safetensors and torch raise several unrelated types
        raise _fail(
            "FM1003",
            name,
            path.parent,
            f"cannot read {path.name}: {exc}",
            "re-save the adapter with peft's save_pretrained",
        ) from exc


def _split_keys(
    name: str, folder: Path, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, dict[str, tuple[int, ...]]], dict[str, dict[str, tuple[int, ...]]]]:
    lora: dict[str, dict[str, tuple[int, ...]]] = {}
    heads: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        short = key.removeprefix(PREFIX)
        match = LORA_KEY.match(short)
        if match:
            lora.setdefault(match["module"], {})[match["part"]] = shape
        elif short.endswith((".weight", ".bias")) and ".lora_" not in short:
            module, _, param = short.rpartition(".")
            heads.setdefault(module.removesuffix(".modules_to_save"), {})[param] = shape
        else:
            raise _fail(
                "FM1004",
                name,
                folder,
                f"tensor `{key}` is not a LoRA A/B matrix",
                "serve plain LoRA adapters on linear layers (no embedding LoRA or extra tokens)",
            )
    return lora, heads


def scan_adapter(name: str, folder: Path) -> AdapterSpec:
    """Read an adapter's config and tensor shapes (not its weights) and check it is servable."""
    config = _read_config(name, folder)
    _check_supported(name, folder, config)
    lora, heads = _split_keys(name, folder, _key_shapes(name, _weights_file(name, folder)))
    ranks, dims, scales = {}, {}, {}
    for module, parts in sorted(lora.items()):
        a, b = parts.get("A"), parts.get("B")
        if a is None or b is None or len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise _fail(
                "FM1004",
                name,
                folder,
                f"module `{module}` has no matching lora_A/lora_B pair",
                "re-save the adapter with peft's save_pretrained",
            )
        ranks[module], dims[module] = a[0], (b[0], a[1])
        scales[module] = _scale(config, module, a[0])
    head_shapes = {m: (p["weight"][0], p["weight"][1]) for m, p in heads.items() if "weight" in p}
    if len(head_shapes) != len(heads) or (not ranks and not heads):
        raise _fail(
            "FM1004",
            name,
            folder,
            "the adapter holds no LoRA weights or a head without weight",
            "re-save the adapter with peft's save_pretrained",
        )
    return AdapterSpec(name, folder, ranks, dims, head_shapes, scales)


def load_adapter_weights(spec: AdapterSpec) -> AdapterWeights:
    """Load an adapter's tensors into host memory (float32 CPU tensors)."""
    path = _weights_file(spec.name, spec.folder)
    try:
        if path.name == SAFETENSORS:
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix(PREFIX): v.float() for k, v in state.items()}
        lora = {m: _module_weights(state, m, spec.scales[m]) for m in spec.ranks}
        heads = {m: _head_weights(state, m) for m in spec.heads}
    except Exception as exc:  # a file changed or damaged since startup
        raise _fail(
            "FM1003",
            spec.name,
            spec.folder,
            f"cannot load the adapter weights: {exc}",
            "re-save the adapter with peft's save_pretrained",
        ) from exc
    return AdapterWeights(spec.name, lora, heads)


def _module_weights(state: Mapping[str, torch.Tensor], module: str, scale: float) -> LoraWeights:
    a = next(v for k, v in state.items() if k.startswith(f"{module}.lora_A"))
    b = next(v for k, v in state.items() if k.startswith(f"{module}.lora_B"))
    return LoraWeights(a.contiguous(), b.contiguous(), scale)


def _head_weights(
    state: Mapping[str, torch.Tensor], module: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = state.get(f"{module}.weight", state.get(f"{module}.modules_to_save.weight"))
    bias = state.get(f"{module}.bias", state.get(f"{module}.modules_to_save.bias"))
    if weight is None:
        raise KeyError(f"{module}.weight")
    return weight.contiguous(), bias

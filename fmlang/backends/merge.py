"""Merging LoRA adapters with peft's weighted-adapter methods, after checking the real
adapter files the parents' training wrote (base model, PEFT kind, ranks, target modules,
whole trained modules) and refusing with diagnostics at the merge block when they differ.

The recipe (`fmlang.lower.merges.lower_merge`) says which peft combination type computes
the method; this module loads the parents onto one base model, calls
`PeftModel.add_weighted_adapter`, and saves the merged adapter as a folder that
`PeftModel.from_pretrained(base, folder)` loads as it is.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlang.backends.train.fisher import is_fisher_folder
from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.errors import StageError
from fmlang.lower.merges import SAME_RANK_METHODS

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class ParentAdapter:
    """One parent's trained adapter: its model name, folder and `adapter_config.json`."""

    name: str
    path: Path
    config: dict[str, Any]

    @property
    def label(self) -> str:
        return f"`{self.name}` ({self.path / CONFIG_FILE})"


def read_parents(
    recipe: dict[str, Any], parent_dirs: dict[str, Path], span: Span | None = None
) -> list[ParentAdapter]:
    """Each parent the recipe names, read from its folder (FM0845 when it cannot be)."""
    names = [str(p["model"]) for p in recipe["parents"]]
    problems: list[Diagnostic] = []
    parents: list[ParentAdapter] = []
    for name in names:
        path = parent_dirs.get(name)
        config = _read_config(path) if path is not None else None
        if path is None or config is None or not any((path / f).is_file() for f in WEIGHT_FILES):
            problems.append(_unreadable(recipe, name, path, span))
        else:
            parents.append(ParentAdapter(name, path, config))
    if problems:
        raise StageError(*problems)
    return parents


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _unreadable(
    recipe: dict[str, Any], name: str, path: Path | None, span: Span | None
) -> Diagnostic:
    where = f"`{path}`" if path is not None else "no folder was given"
    return error(
        "FM0845",
        f"cannot read the adapter of `{name}`, merged into `{recipe['merge']}`: {where}",
        span,
        f"`{name}` is merged here",
        help=f"train `{name}` first (`fmc run`); its folder needs {CONFIG_FILE} and "
        f"{' or '.join(WEIGHT_FILES)}",
    )


# ---- compatibility ------------------------------------------------------------------


def check_parents(
    recipe: dict[str, Any], parents: list[ParentAdapter], span: Span | None = None
) -> None:
    """Refuse a merge peft could not do, or would do wrongly, naming each parent's value.
    Adapters of different or unmergeable kinds are reported alone: comparing their ranks
    and targets would say nothing more."""
    kinds = _check_kinds(recipe, parents, span)
    if kinds:
        raise StageError(*kinds)
    problems = [
        d
        for check in (_check_bases, _check_ranks, _check_targets, _check_saved)
        for d in check(recipe, parents, span)
    ]
    if problems:
        raise StageError(*problems)


def _differ(
    code: str,
    recipe: dict[str, Any],
    what: str,
    values: dict[str, str],
    span: Span | None,
    help: str,
) -> list[Diagnostic]:
    """One diagnostic when the parents' `values` are not all equal, one note per parent."""
    if len(set(values.values())) <= 1:
        return []
    notes = tuple(f"{label}: {value}" for label, value in values.items())
    return [
        error(
            code,
            f"cannot merge `{recipe['merge']}`: its adapters {what}",
            span,
            f"`{recipe['method']}` merge of {', '.join(p['model'] for p in recipe['parents'])}",
            help=help,
            notes=notes,
        )
    ]


def _check_kinds(
    recipe: dict[str, Any], parents: list[ParentAdapter], span: Span | None
) -> list[Diagnostic]:
    kinds = {p.label: str(p.config.get("peft_type", "unknown")) for p in parents}
    differ = _differ(
        "FM0841",
        recipe,
        "are of different PEFT kinds",
        kinds,
        span,
        "give every merged model the same `adapter` kind and retrain",
    )
    if differ:
        return differ
    return [_unmergeable(recipe, p, why, span) for p in parents if (why := _why_unmergeable(p))]


def _why_unmergeable(parent: ParentAdapter) -> str | None:
    config = parent.config
    if config.get("peft_type") != "LORA":
        return f"it is a {config.get('peft_type', 'unknown')} adapter, not LoRA"
    if config.get("use_dora"):
        return "it is a DoRA adapter, whose magnitude vectors do not combine"
    if config.get("target_parameters"):
        return "it targets raw parameters, which peft cannot merge"
    return None


def _unmergeable(
    recipe: dict[str, Any], parent: ParentAdapter, why: str, span: Span | None
) -> Diagnostic:
    return error(
        "FM0844",
        f"cannot merge `{recipe['merge']}`: the adapter of `{parent.name}` cannot be merged",
        span,
        f"`{parent.name}` is merged here",
        notes=(f"{parent.label}: {why}",),
        help="merge LoRA adapters (`adapter lora(...)`), or serve the models side by side "
        "with `adapters dynamic`",
    )


def _base_of(config: dict[str, Any]) -> str:
    name = str(config.get("base_model_name_or_path") or "unknown")
    path = Path(name)
    if path.is_dir():
        name = str(path.resolve())
    revision = config.get("revision")
    return f"{name} (revision {revision})" if revision else name


def _check_bases(
    recipe: dict[str, Any], parents: list[ParentAdapter], span: Span | None
) -> list[Diagnostic]:
    bases = {p.label: _base_of(p.config) for p in parents}
    return _differ(
        "FM0840",
        recipe,
        "were trained on different base models",
        bases,
        span,
        "retrain the odd adapters on the common base model",
    )


def _rank_of(config: dict[str, Any]) -> str:
    pattern = config.get("rank_pattern") or {}
    rank = str(config.get("r"))
    return f"{rank}, per module {json.dumps(pattern, sort_keys=True)}" if pattern else rank


def _check_ranks(
    recipe: dict[str, Any], parents: list[ParentAdapter], span: Span | None
) -> list[Diagnostic]:
    if recipe["method"] not in SAME_RANK_METHODS:
        return []
    ranks = {p.label: f"rank {_rank_of(p.config)}" for p in parents}
    return _differ(
        "FM0842",
        recipe,
        f"have different ranks, and `{recipe['method']}` needs one rank",
        ranks,
        span,
        "retrain with one fixed `rank`, or merge with `cat` or `svd(rank = N)`",
    )


def _targets_of(config: dict[str, Any]) -> str:
    targets = config.get("target_modules")
    if isinstance(targets, str):
        return f"modules matching /{targets}/"
    return ", ".join(sorted(str(t) for t in targets or ())) or "no modules"


def _check_targets(
    recipe: dict[str, Any], parents: list[ParentAdapter], span: Span | None
) -> list[Diagnostic]:
    targets = {p.label: f"targets {_targets_of(p.config)}" for p in parents}
    return _differ(
        "FM0843",
        recipe,
        "target different modules",
        targets,
        span,
        "give every merged model the same `targets = [...]` and retrain",
    )


def _check_saved(
    recipe: dict[str, Any], parents: list[ParentAdapter], span: Span | None
) -> list[Diagnostic]:
    owners: dict[str, list[str]] = {}
    for parent in parents:
        for module in parent.config.get("modules_to_save") or ():
            owners.setdefault(str(module), []).append(parent.label)
    return [
        error(
            "FM0847",
            f"cannot merge `{recipe['merge']}`: {len(labels)} adapters fully train `{module}`",
            span,
            "merged here",
            notes=tuple(f"{label}: trains all of `{module}`" for label in labels),
            help="whole trained modules (a classification head, for example) have no "
            "low-rank update to combine; merge generative adapters or keep the models apart",
        )
        for module, labels in sorted(owners.items())
        if len(labels) > 1
    ]


# ---- merging ------------------------------------------------------------------------


def merge_adapters(
    recipe: dict[str, Any],
    base_model: Any,
    parent_dirs: dict[str, Path],
    out_dir: Path,
    *,
    span: Span | None = None,
) -> Path:
    """Merge the recipe's parents (adapter folders by model name) on `base_model` (a loaded
    transformers model, left as it was afterwards, or the folder of one) into `out_dir`.
    `span` is the merge block's, where refusals point. Returns `out_dir`."""
    parents = read_parents(recipe, parent_dirs, span)
    check_parents(recipe, parents, span)
    model = _load_base(base_model, recipe) if isinstance(base_model, (str, Path)) else base_model
    peft_model = _load_parents(model, parents)
    try:
        _add_weighted(peft_model, recipe, [p.name for p in parents])
        _save_atomic(peft_model, str(recipe["output"]), out_dir)
    finally:
        peft_model.unload()
    return out_dir


def _load_base(path: str | Path, recipe: dict[str, Any]) -> Any:
    import transformers

    auto = {
        "classify": transformers.AutoModelForSequenceClassification,
        "embed": transformers.AutoModel,
    }.get(str(recipe.get("task")), transformers.AutoModelForCausalLM)
    return auto.from_pretrained(str(path))


def _load_parents(model: Any, parents: list[ParentAdapter]) -> Any:
    from peft import PeftModel

    first, *rest = parents
    peft_model = PeftModel.from_pretrained(model, str(first.path), adapter_name=first.name)
    for parent in rest:
        peft_model.load_adapter(str(parent.path), adapter_name=parent.name)
    return peft_model


def _add_weighted(peft_model: Any, recipe: dict[str, Any], names: list[str]) -> None:
    import torch

    options: dict[str, Any] = {"combination_type": recipe["combination_type"]}
    for key in ("density", "majority_sign_method", "svd_rank"):
        if recipe.get(key) is not None:
            options[key] = recipe[key]
    if str(recipe["combination_type"]).endswith("svd"):
        options["svd_full_matrices"] = False  # the same factors, without the unused columns
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe.get("seed", 0)))
        peft_model.add_weighted_adapter(
            names, [float(w) for w in recipe["weights"]], str(recipe["output"]), **options
        )


def _save_atomic(peft_model: Any, adapter: str, out_dir: Path) -> None:
    """Save into a temporary folder beside `out_dir`, then rename it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        peft_model.save_pretrained(str(staging), selected_adapters=[adapter])
        saved = staging if adapter == "default" else staging / adapter
        from fmlang.backends.train.trainer import stable_adapter_config

        stable_adapter_config(saved, peft_model)  # set-valued fields in one order, any hash seed
        if out_dir.exists():
            shutil.rmtree(out_dir)
        saved.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- weight updates, for `fmc diff` -------------------------------------------------


@dataclass(frozen=True)
class LayerDelta:
    """How one module's update (LoRA: ΔW = B·A·scale) or one tensor differs between two
    adapters: Frobenius norms of each and of their difference; `relative` is the
    difference over the larger of the two norms."""

    name: str
    kind: str  # "lora" (a module's ΔW), "sparse" (a fisher_mask diff) or "tensor" (any other)
    norm_a: float | None
    norm_b: float | None
    diff: float | None
    relative: float | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "norm_a": self.norm_a,
            "norm_b": self.norm_b,
            "diff": self.diff,
            "relative": self.relative,
            "note": self.note,
        }


def load_adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The saved tensors of an adapter folder (safetensors, or a torch `.bin`)."""
    import torch

    safetensors_file = folder / WEIGHT_FILES[0]
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return dict(load_file(str(safetensors_file)))
    loaded = torch.load(str(folder / WEIGHT_FILES[1]), map_location="cpu", weights_only=True)
    return dict(loaded)


# (A key suffix, B key suffix, whether ΔW is transposed: embeddings store A·B the other way)
_LORA_PAIRS = (
    ("lora_A.weight", "lora_B.weight", False),
    ("lora_embedding_A", "lora_embedding_B", True),
)
_PREFIX = "base_model.model."


def lora_updates(
    config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each LoRA module's ΔW = B·A·scale (by module name), and the tensors that are no
    LoRA pair (DoRA magnitudes, whole trained modules, other PEFT kinds' weights)."""
    updates: dict[str, torch.Tensor] = {}
    rest = dict(tensors)
    for key in sorted(tensors):
        for a_suffix, b_suffix, transposed in _LORA_PAIRS:
            module = key[: -len(a_suffix) - 1]
            b_key = f"{module}.{b_suffix}"
            if not key.endswith("." + a_suffix) or b_key not in tensors:
                continue
            a, b = rest.pop(key).float(), rest.pop(b_key).float()
            delta = b.flatten(1) @ a.flatten(1)
            scale = _scale(config, module, int(a.shape[0]))
            updates[module.removeprefix(_PREFIX)] = (delta.T if transposed else delta) * scale
    return updates, {key.removeprefix(_PREFIX): value for key, value in rest.items()}


def _pattern_value(pattern: dict[str, Any], module: str) -> Any:
    """peft's per-module overrides (`rank_pattern`, `alpha_pattern`): a key matches a
    module named exactly so, ending in `.key`, or matching it as a regular expression."""
    import re

    for key, value in pattern.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return value
    return None


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    override = _pattern_value(config.get("alpha_pattern") or {}, module)
    alpha = float(override if override is not None else config.get("lora_alpha", 8))
    if config.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


def weight_deltas(dir_a: Path, dir_b: Path) -> list[LayerDelta]:
    """Per module (LoRA ΔW) and per other tensor, how the adapters in two folders differ."""
    updates_a, rest_a = _updates(dir_a)
    updates_b, rest_b = _updates(dir_b)
    kind = "sparse" if is_fisher_folder(dir_a) and is_fisher_folder(dir_b) else "lora"
    rows = [
        _layer_delta(name, kind, updates_a.get(name), updates_b.get(name))
        for name in sorted(set(updates_a) | set(updates_b))
    ]
    rows += [
        _layer_delta(name, "tensor", rest_a.get(name), rest_b.get(name))
        for name in sorted(set(rest_a) | set(rest_b))
    ]
    return rows


def _updates(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LoRA's ΔW per module, or a fisher_mask diff's dense update per parameter."""
    from fmlang.backends.train.fisher import dense_updates

    if is_fisher_folder(folder):
        return dense_updates(folder)
    return lora_updates(_read_config(folder) or {}, load_adapter_tensors(folder))


def _layer_delta(
    name: str, kind: str, a: torch.Tensor | None, b: torch.Tensor | None
) -> LayerDelta:
    norm_a = float(a.float().norm()) if a is not None else None
    norm_b = float(b.float().norm()) if b is not None else None
    if a is None or b is None:
        note = "only in A" if b is None else "only in B"
        return LayerDelta(name, kind, norm_a, norm_b, norm_a or norm_b, 1.0, note)
    if a.shape != b.shape:
        shapes = f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
        return LayerDelta(name, kind, norm_a, norm_b, None, None, shapes)
    diff = float((a.float() - b.float()).norm())
    largest = max(norm_a or 0.0, norm_b or 0.0)
    return LayerDelta(name, kind, norm_a, norm_b, diff, diff / largest if largest else 0.0)

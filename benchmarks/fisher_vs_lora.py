"""FishMask against LoRA on the YouTube spam example, at equal trainable parameter counts.

Runs `examples/youtube_spam/spam.fm` through `fmc run` (the API, up to its train stage)
twice in temporary copies: once as written (LoRA on query/value, the rank the solver
chooses), once with `adapter fisher_mask(density = D)`, where D makes the mask's `k`
equal LoRA's trainable parameter count (`rank x (d_in + d_out)` per wrapped matrix; the
classification head trains in full in both and is left out of both counts). Same data,
labels, epochs, learning rate and seed. The deployment block is left out of the copies
(a fisher_mask model cannot be deployed: FM0357). Prints test accuracy, the bytes of the
stored update (every file of the adapter folder: what the registry stores), the training
wall time (the train stage's, Fisher estimate included), and the fisher/LoRA ratio of each.
Both runs train with batch 16, what the example's `batch = auto` resolves to, written out
so that the solver cannot give the two different batches.

    .venv/bin/python benchmarks/fisher_vs_lora.py            # the example as written
    .venv/bin/python benchmarks/fisher_vs_lora.py --epochs 1 # one epoch each
    .venv/bin/python benchmarks/fisher_vs_lora.py --quick    # 20 optimizer steps each
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fmlang.api import build as build_artifacts
from fmlang.api import check_paths, compile_spec
from fmlang.backends.run import RunOptions, run

EXAMPLE = Path(__file__).resolve().parent.parent / "examples/youtube_spam"
PRINCIPAL = "team:trust-safety"
LORA_LINE = re.compile(r"^  adapter lora\(.*\)$", re.M)
BASE_PARAMS = 22_713_216  # std.models.minilm_l6 `params`: what the density is a fraction of
HIDDEN, LAYERS = 384, 6
BATCH = 16  # what the example's `batch = auto` resolves to (its comment): 200+ steps


def variant(folder: Path, adapter: str | None, quick: bool, epochs: int) -> Path:
    """A copy of the example spec beside its data: `adapter` replaces the LoRA line."""
    folder.mkdir(parents=True)
    shutil.copytree(EXAMPLE / "data/raw", folder / "data/raw")  # sources refuse symlinks
    text = (EXAMPLE / "spam.fm").read_text(encoding="utf-8")
    text = text[: text.index("deploy spam_filter {")]
    if adapter is not None:
        text = LORA_LINE.sub(f"  adapter {adapter}", text)
    # one batch for both (the solver's `auto` could differ: FishMask prices more memory)
    text = re.sub(r"batch  = auto[^\n]*", f"batch  = {BATCH}", text)
    if quick:
        text = text.replace("epochs = 3", "max_steps = 20")
    elif epochs != 3:
        text = text.replace("epochs = 3", f"epochs = {epochs}")
    spec = folder / "spam.fm"
    spec.write_text(text, encoding="utf-8")
    return spec


def run_until_train(spec: Path) -> dict[str, Any]:
    result = check_paths([spec], verify=True)
    if not result.ok:
        raise SystemExit("\n".join(d.message for d in result.diagnostics))
    build = spec.parent / "build"
    build_artifacts(result, build, only_if_stale=True)
    options = RunOptions(build, spec, "train", PRINCIPAL, False, log=lambda _: None)
    run(compile_spec(result), options, spec.read_text(encoding="utf-8"))
    model = build / "run/models/spam_filter"
    metrics = json.loads((model / "metrics.json").read_text(encoding="utf-8"))
    adapter = model / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    return {
        "accuracy": metrics["eval"]["comments.test"]["accuracy"],
        "update_bytes": sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file()),
        "train_s": metrics["train"]["wall_s"],
        "config": config,
    }


def lora_params(rank: int, targets: list[str]) -> int:
    """LoRA's trainable parameters on MiniLM-L6: query and value are 384 x 384."""
    return sum(rank * (HIDDEN + HIDDEN) * LAYERS for _ in targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 optimizer steps per run")
    parser.add_argument("--samples", type=int, default=256, help="rows for the Fisher estimate")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the example: 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lora = run_until_train(variant(Path(tmp) / "lora", None, args.quick, args.epochs))
        rank, targets = lora["config"]["r"], lora["config"]["target_modules"]
        k = lora_params(rank, targets)
        density = 100 * k / BASE_PARAMS
        fisher_adapter = f"fisher_mask(density = {density:.6f}%, samples = {args.samples})"
        fisher_spec = variant(Path(tmp) / "fisher", fisher_adapter, args.quick, args.epochs)
        fisher = run_until_train(fisher_spec)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"LoRA rank {rank} on {', '.join(targets)}: {k:,} trainable parameters")
    print(f"fisher_mask density {density:.6f}%: {fisher['config']['selected']:,} selected")
    print(f"{'':<22}{'LoRA':>14}{'fisher_mask':>14}{'ratio':>10}")
    for key, label, form in (
        ("accuracy", "test accuracy", ".4f"),
        ("update_bytes", "update bytes", ",.0f"),
        ("train_s", "training time (s)", ".1f"),
    ):
        a, b = float(lora[key]), float(fisher[key])
        ratio = b / a if a else float("nan")
        print(f"{label:<22}{a:>14{form}}{b:>14{form}}{ratio:>10.3f}")


if __name__ == "__main__":
    main()

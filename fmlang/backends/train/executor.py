"""`executor_trainer_class`: transformers' `Trainer` with what the executor adds.

- classification: cross-entropy on class indices, or soft cross-entropy on probabilities;
- `chunked_loss` (generate): the causal-LM loss over the final hidden states in chunks,
  the full-sequence logits never materialised (`losses.chunked_loss_forward`);
- `checkpointing = offload`: every training step's saved tensors (the checkpointed layers'
  inputs, under full checkpointing) kept in host memory (`save_on_cpu`, pinned on CUDA);
- `optimizer_in_backward`: the per-parameter optimizers stepped in backward hooks
  (`in_backward`) behind one optimizer the Trainer drives and schedules.
"""

from __future__ import annotations

from typing import Any

from fmlang.backends.train.job import MemorySettings
from fmlang.backends.train.losses import chunked_loss_forward, soft_cross_entropy


def executor_trainer_class(task: str, memory: MemorySettings | None = None) -> Any:
    import torch
    from transformers import Trainer

    settings = memory or MemorySettings()

    class ExecutorTrainer(Trainer):
        """The Trainer, with the executor's losses, offloaded checkpoints and optimizer."""

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            if task == "classify":
                loss, outputs = _classify_loss(model, inputs)
            elif settings.chunked_loss:
                # the Trainer treats a loss as scaled for accumulation only in this case
                items = num_items_in_batch if self.model_accepts_loss_kwargs else None
                unwrapped = self.accelerator.unwrap_model(model)
                loss, outputs = chunked_loss_forward(model, unwrapped, inputs, items)
                if self.args.average_tokens_across_devices and items is not None:
                    loss = loss * self.accelerator.num_processes
            else:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

        def training_step(
            self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
        ) -> Any:
            if settings.checkpointing != "offload":
                return super().training_step(model, inputs, num_items_in_batch)
            pin = bool(torch.cuda.is_available())
            with torch.autograd.graph.save_on_cpu(pin_memory=pin):
                return super().training_step(model, inputs, num_items_in_batch)

        def train(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().train(*args, **kwargs)
            finally:
                # accelerate wraps the optimizer (AcceleratedOptimizer.optimizer is ours)
                inner = getattr(self.optimizer, "optimizer", self.optimizer)
                release = getattr(inner, "release", None)
                if callable(release):  # the in-backward hooks keep the model alive
                    release()

        def create_optimizer(self, model: Any = None) -> Any:
            if not settings.optimizer_in_backward or self.optimizer is not None:
                return super().create_optimizer(model)
            from fmlang.backends.train.in_backward import in_backward_optimizer

            target: Any = self.model if model is None else model
            cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, target)
            decay = set(self.get_decay_parameter_names(target))
            self.optimizer = in_backward_optimizer(
                target, cls, kwargs, decay, self.args.weight_decay
            )
            return self.optimizer

    return ExecutorTrainer


def _classify_loss(model: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    labels = inputs["labels"]
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
    if labels.is_floating_point():
        return soft_cross_entropy(outputs.logits, labels), outputs
    return torch.nn.functional.cross_entropy(outputs.logits.float(), labels), outputs

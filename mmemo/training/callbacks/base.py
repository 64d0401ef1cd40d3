"""The callback protocol: everything optional in training hooks into the loop here, so the trainer keeps no
trick-specific branch (transformers' ``TrainerCallback``, Lightning's ``Callback``).

The trainer calls, in this order::

    setup                          model, optimiser and scheduler exist; before a checkpoint is restored
    on_train_start                 after a resume, before the first batch
      on_epoch_start
        on_before_backward(batch)  the batch's loss is computed
        on_loss(loss)              every loss about to be backpropagated (the batch's, and any extra one)
        on_after_backward(batch)   gradients of the batch exist; a callback may add to them
        on_step_end                after an optimiser step and the scheduler's (``state["global_step"]`` counted)
      on_evaluate_start            the selection split is about to be evaluated
      on_evaluate(record)          its metrics (``record["best"]``: the selected epoch so far)
      on_evaluate_end
      on_epoch_end
    on_train_end                   the dev-selected weights are loaded; before the final evaluations

A callback that changes training carries what it learnt in ``state_dict`` (plain values and tensors): it is
saved in every checkpoint and restored on resume, so a resumed run stays exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class Callback:
    name: ClassVar[str] = ""  # its state's name in checkpoints (empty: it has no state)

    def setup(self, trainer: Trainer) -> None: ...

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> None: ...

    def on_before_backward(self, trainer: Trainer, batch: dict[str, Any]) -> None: ...

    def on_after_backward(self, trainer: Trainer, batch: dict[str, Any]) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_evaluate_start(self, trainer: Trainer) -> None: ...

    def on_evaluate(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_evaluate_end(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

"""Adversarial training on token embeddings: FGM (Miyato et al., ICLR 2017, "Adversarial training methods for
semi-supervised text classification"), as text-classification fine-tunes commonly use it.

After the clean backward pass, each token-embedding matrix moves by ``epsilon`` (L2 norm) along its gradient,
the worst small change of the words the batch holds; the loss on the moved embeddings is backpropagated into
the same gradients, and the matrices are put back exactly. One more forward and backward pass a step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmemo.errors import ConfigError
from mmemo.training.callbacks.base import Callback

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class FastGradientMethod:
    """Perturbs ``embeddings`` along their current gradients inside ``perturbed()``."""

    def __init__(self, embeddings: Sequence[nn.Parameter], epsilon: float):
        if epsilon <= 0:
            raise ValueError(f"FastGradientMethod: epsilon must be > 0, got {epsilon}")
        if not embeddings:
            raise ValueError("FastGradientMethod: no token embeddings to perturb")
        self.embeddings = list(embeddings)
        self.epsilon = epsilon

    def gradients(self) -> list[torch.Tensor | None]:
        """The embeddings' gradients so far, taken before a batch's backward pass: under gradient accumulation
        they hold earlier batches' gradients, which ``perturbed(before)`` takes out of the direction. Free when
        the gradients were set to None."""
        return [None if w.grad is None else w.grad.detach().clone() for w in self.embeddings]

    @contextmanager
    def perturbed(self, before: list[torch.Tensor | None] | None = None) -> Iterator[bool]:
        """Yields whether anything moved: nothing does before a backward pass, or while the encoders are held
        (``train.head_only_epochs``) and their embeddings get no gradient."""
        saved = []
        with torch.no_grad():
            for weight, earlier in zip(self.embeddings, before or [None] * len(self.embeddings), strict=True):
                grad = weight.grad
                if grad is None:
                    continue
                if earlier is not None:
                    grad = grad - earlier
                norm = torch.linalg.vector_norm(grad.float())
                if not torch.isfinite(norm) or norm == 0:
                    continue
                saved.append((weight, weight.detach().clone()))
                weight.add_((self.epsilon / norm) * grad.to(weight.dtype))
        try:
            yield bool(saved)
        finally:
            with torch.no_grad():
                for weight, original in saved:
                    weight.copy_(original)


class AdversarialTraining(Callback):
    """``train.adversarial_epsilon``: after the batch's backward pass, the loss at the worst nearby token
    embeddings (FGM) is backpropagated into the same gradients. One more forward and backward pass a step."""

    def __init__(self, epsilon: float):
        self.epsilon = epsilon
        self.fgm: FastGradientMethod | None = None
        self._before: list[torch.Tensor | None] | None = None

    def setup(self, trainer: Trainer) -> None:
        encoders = trainer.unwrapped.encoders
        embeddings = [w for enc in encoders.values() if (w := enc.token_embeddings()) is not None]
        if not embeddings:
            raise ConfigError(
                f"train.adversarial_epsilon: perturbs trainable token embeddings, and none of the encoders of "
                f"{list(encoders)} has them (it needs an hf_text encoder whose embeddings are not frozen by freeze "
                "or freeze_token_embeddings)")
        self.fgm = FastGradientMethod(embeddings, self.epsilon)

    def on_before_backward(self, trainer: Trainer, batch: dict[str, Any]) -> None:
        self._before = self.fgm.gradients()

    def on_after_backward(self, trainer: Trainer, batch: dict[str, Any]) -> None:
        with self.fgm.perturbed(self._before) as moved:
            if moved:
                trainer.backward(trainer.compute_loss(batch))
        self._before = None

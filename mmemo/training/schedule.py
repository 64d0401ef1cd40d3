"""Learning-rate schedules, with an optional head-only phase before the encoders start to train.

LP-FT (Kumar et al., ICLR 2022): fitting a new head on the pretrained features first, then fine-tuning
everything, moves the features less than fine-tuning under a random head does. The encoders' schedule
(warmup, then decay) starts when they start training, so they get the same shape as without the phase.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def schedule_shape(kind: str, warmup_ratio: float, total_steps: int) -> Callable[[int], float]:
    """The transformers schedule ``kind`` over ``total_steps`` steps, as a function of the step."""
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return get_scheduler(NAMES[kind], probe, num_warmup_steps=int(warmup_ratio * total_steps),
                         num_training_steps=total_steps).lr_lambdas[0]


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_ratio: float, total_steps: int,
                    held_steps: int = 0, held_groups: set[str] | frozenset[str] = frozenset()) -> LambdaLR:
    """Every group follows ``kind`` over ``total_steps``, except the groups named in ``held_groups``: they stay
    at 0 for the first ``held_steps`` steps, then follow ``kind`` over the steps that remain."""
    if not 0 <= held_steps < total_steps:
        raise ValueError(f"the head-only phase ({held_steps} steps) must be shorter than training ({total_steps} steps)")
    everyone = schedule_shape(kind, warmup_ratio, total_steps)
    late = schedule_shape(kind, warmup_ratio, total_steps - held_steps)

    def held(step: int) -> float:
        return 0.0 if step < held_steps else late(step - held_steps)

    lambdas = [held if g.get("name") in held_groups else everyone for g in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas)

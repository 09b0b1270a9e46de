"""Learning-rate schedule: linear warm-up then cosine decay (the paper's optimiser schedule).

Kept rather than ``transformers.get_cosine_schedule_with_warmup`` / torch's ``LambdaLR``: those
are stateful schedulers whose step count would have to be checkpointed beside the optimiser,
while here the rate is a pure function of the step a resumed run already restores; and their
warm-up starts at lr 0, an optimisation step that does nothing.
"""
from __future__ import annotations

import math


def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_fraction: float = 0.05,
                     min_lr_ratio: float = 0.0) -> float:
    """Learning rate for optimisation step ``step`` (0-based) of ``total_steps``.

    Warm-up rises linearly from ``base_lr / warmup_steps`` to ``base_lr`` over
    ``round(warmup_fraction * total_steps)`` steps (at least 1 when the fraction is > 0);
    then a cosine decays to ``min_lr_ratio * base_lr`` at the last step.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup - 1)
    progress = min(1.0, (step - warmup) / decay_steps)
    min_lr = min_lr_ratio * base_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))

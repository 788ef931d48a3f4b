"""Learning-rate and momentum schedule of the YOLO recipes: linear warm-up, then cosine decay.

During warm-up the bias group starts high (``warmup_bias_lr``) and falls to its scheduled value,
the other groups rise from 0, and momentum rises from ``warmup_momentum`` to its final value.
After warm-up every group follows ``lr * (final + (1 - final) * (1 + cos(pi * t)) / 2)``, where
``t`` is the fraction of training done, counted per step or, as the official recipes do it, per
epoch (``decay_interval``: the learning rate then changes only at epoch boundaries).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineSchedule(LRScheduler):
    """Per-step schedule; param groups flagged ``is_bias`` get the high warm-up start."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        final_lr_fraction: float,
        warmup_bias_lr: float,
        warmup_momentum: float,
        decay_interval: int = 1,
    ) -> None:
        self.total_steps = max(1, total_steps)
        self.decay_interval = max(1, decay_interval)
        self.warmup_steps = max(0, warmup_steps)
        self.final_lr_fraction = final_lr_fraction
        self.warmup_bias_lr = warmup_bias_lr
        self.warmup_momentum = warmup_momentum
        self.momenta = [group["momentum"] for group in optimizer.param_groups]
        super().__init__(optimizer)

    def cosine_factor(self, step: int) -> float:
        decayed = step // self.decay_interval * self.decay_interval
        progress = min(1.0, decayed / self.total_steps)
        final = self.final_lr_fraction
        return final + (1 - final) * (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        factor = self.cosine_factor(step)
        lrs = []
        for base_lr, momentum, group in zip(
            self.base_lrs, self.momenta, self.optimizer.param_groups, strict=True
        ):
            lr = base_lr * factor
            if step < self.warmup_steps:
                ramp = step / self.warmup_steps
                start = self.warmup_bias_lr if group.get("is_bias") else 0.0
                lr = start + (lr - start) * ramp
                group["momentum"] = self.warmup_momentum + (momentum - self.warmup_momentum) * ramp
            else:
                group["momentum"] = momentum
            lrs.append(lr)
        return lrs

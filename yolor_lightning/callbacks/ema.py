"""Exponential moving average of the weights, with the decay ramp of the YOLO recipes.

Built on Lightning's :class:`WeightAveraging`, which swaps the averaged weights in for
validation and saves them as the checkpoint's ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


def ramped_ema_update(decay: float, ramp_steps: float):
    """An ``AveragedModel`` multi-average function: ``d = decay * (1 - exp(-n / ramp_steps))``.

    The ramp keeps early averages close to the live weights, so short runs still benefit.
    Integer buffers (BatchNorm's batch counters) are copied, not averaged.
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        step_decay = decay * (1 - math.exp(-float(num_averaged) / ramp_steps))
        torch._foreach_lerp_(averaged, current, 1 - step_decay)

    return update


class RampedEMA(WeightAveraging):
    """EMA weights updated after every optimizer step and used for validation and checkpoints."""

    def __init__(self, decay: float = 0.9999, ramp_steps: float = 2000) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=ramped_ema_update(decay, ramp_steps))

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Average only after batches that ended with an optimizer step: ``global_step`` counts
        every batch, also those that only add gradients up
        (task.optimizer.accumulate_to_nominal)."""
        if getattr(pl_module, "optimizer_stepped", True):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

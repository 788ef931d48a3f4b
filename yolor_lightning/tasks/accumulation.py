"""Gradient accumulation to a nominal batch, as the official YOLO recipes do it.

The optimiser steps after the batches whose global index ``i`` is a multiple of the current
interval. The interval starts at 1 and rises linearly (rounded half to even) over the warm-up to
``nominal / total`` batches (at least 1), where it stays: small batches add their gradients up
to about the nominal batch of 64 images before each step, yet the first steps of warm-up are not
delayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NominalBatchAccumulation:
    """When the optimiser steps, given the images per step of all processes (``total_batch``)."""

    nominal_batch: int
    total_batch: int
    warmup_steps: int

    @property
    def final_interval(self) -> int:
        """Batches per optimiser step after warm-up."""
        return max(round(self.nominal_batch / self.total_batch), 1)

    def interval(self, batch: int) -> int:
        """Batches per optimiser step at global batch index ``batch``."""
        if self.warmup_steps <= 0:
            return self.final_interval
        ramp = np.interp(
            min(batch, self.warmup_steps),
            [0, self.warmup_steps],
            [1, self.nominal_batch / self.total_batch],
        )
        return max(1, round(float(ramp)))

    def steps_after(self, batch: int) -> bool:
        """Whether the optimiser steps after global batch index ``batch``."""
        return batch % self.interval(batch) == 0

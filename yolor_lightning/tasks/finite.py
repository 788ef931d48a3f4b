"""Non-finite numbers stop a run where they appear, before they reach a checkpoint."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class NonFiniteError(FloatingPointError):
    """A training loss or a weight to be saved is NaN or infinite: the run stops."""


def non_finite(tensors: Mapping[str, Tensor]) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [
        name
        for name, value in tensors.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]

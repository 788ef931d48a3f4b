"""Operators ⋆ that combine explicit features `x` with implicit knowledge `g`: add, mul, concat.

`g` is broadcast over the batch and the spatial positions; concatenation appends `g` as extra
channels, so the layer that follows reads `C + C'` channels (twice as many at the `fa` site).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

IDENTITY: dict[str, float] = {"add": 0.0, "mul": 1.0, "concat": 0.0}
"""The value of `g` that leaves the features unchanged: where every prior starts (for concat,
zero channels that the next layer's new input columns read as nothing)."""

OPERATORS: tuple[str, ...] = tuple(IDENTITY)


def _concat(x: Tensor, g: Tensor) -> Tensor:
    return torch.cat((x, g.expand(*x.shape[:-3], -1, *x.shape[-2:])), dim=-3)


_COMBINE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "add": torch.add,
    "mul": torch.mul,
    "concat": _concat,
}


def check_operator(name: str) -> str:
    """`name` if it is a known operator, else a ValueError listing the known ones."""
    if name not in _COMBINE:
        raise ValueError(f"unknown implicit operator {name!r}; allowed: {', '.join(OPERATORS)}")
    return name


def combine(name: str, x: Tensor, g: Tensor) -> Tensor:
    """`x ⋆ g` for feature maps `x` [..., C, H, W] and `g` [..., C', 1, 1] (broadcastable)."""
    return _COMBINE[check_operator(name)](x, g)

"""The reversible backward of a RevCol column (megvii-research/RevCol `revcol_function.py`).

A column maps the stem's map `x` and the previous column's levels `c_0 .. c_3` to its own:

    c'_i = α_i · c_i + L_i(c'_{i-1}, c_{i+1})        (c'_{-1} = x; no c_{i+1} at the last level)

so the previous column is recovered from this one: `c_i = (c'_i − L_i(c'_{i-1}, c_{i+1})) / α_i`,
going from the coarsest level down (`c_{i+1}` is recovered first). `ReversibleColumn` keeps only
the column's outputs (and `x`) for the backward pass. Its backward recomputes each level from
them, coarsest first, under the forward's autocast state and with the forward's drop-path draws
(`DropPath.draw`), reconstructs the previous column, and returns the gradients of `x`, of the
previous column and of every parameter of the column (passed in as inputs, so that autograd
accumulates them and DDP sees them as ordinary gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from yolor_lightning.models.revcol_blocks import DropPath


def _autocast_state(device_type: str) -> dict[str, Any]:
    return {
        "device_type": device_type,
        "enabled": torch.is_autocast_enabled(device_type),
        "dtype": torch.get_autocast_dtype(device_type),
    }


def _requiring_grad(tensor: Tensor) -> Tensor:
    return tensor.detach().requires_grad_(True)


def _channel_sum(tensor: Tensor) -> Tensor:
    """A per-channel gradient `[1, C, 1, 1]` (the shape of α) from a per-element one."""
    return tensor.sum(dim=(0, 2, 3), keepdim=True)


class ReversibleColumn(torch.autograd.Function):
    """`apply(column, x, *previous, *column.parameters())` -> the column's levels.

    `column` has `levels` (callables `(finer, coarser) -> map`), `alphas` (the shortcut scales
    α_i, `[1, C_i, 1, 1]`) and `first` (no previous column: `previous` is empty and the
    shortcut terms are zero).
    """

    @staticmethod
    def forward(ctx: Any, column: nn.Module, x: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        previous = list(tensors[: 0 if column.first else len(column.levels)])
        ctx.column = column
        ctx.num_previous = len(previous)
        ctx.autocast = _autocast_state(x.device.type)
        ctx.draws = [(m, m.draw) for m in column.modules() if isinstance(m, DropPath)]
        with torch.no_grad():
            outputs = column.run(x, previous or None)
        ctx.save_for_backward(x, *outputs)
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *output_grads: Tensor | None) -> tuple[Tensor | None, ...]:
        x, *outputs = ctx.saved_tensors
        column = ctx.column
        for module, draw in ctx.draws:
            module.draw = draw
        grads = [
            torch.zeros_like(out) if grad is None else grad
            for out, grad in zip(outputs, output_grads, strict=True)
        ]
        previous_grads, parameter_grads, x_grad = _column_backward(column, x, outputs, grads, ctx)
        ordered = [parameter_grads.get(p) for p in column.parameters()]
        return (None, x_grad, *previous_grads[: ctx.num_previous], *ordered)


def _column_backward(
    column: nn.Module,
    x: Tensor,
    outputs: Sequence[Tensor],
    grads: list[Tensor],
    ctx: Any,
) -> tuple[list[Tensor | None], dict[nn.Parameter, Tensor | None], Tensor | None]:
    """Level by level, coarsest first: recompute the level from this column's outputs and the
    reconstructed coarser level of the previous column, back-propagate the level's output
    gradient `grads[i]` (plus what the coarser level sent down), reconstruct the previous
    column's level. Returns the previous column's gradients, the parameters' and x's."""
    count = len(outputs)
    previous: list[Tensor | None] = [None] * count
    previous_grads: list[Tensor | None] = [None] * count
    parameter_grads: dict[nn.Parameter, Tensor | None] = {}
    x_grad = None
    with torch.enable_grad(), torch.autocast(**ctx.autocast):
        for i in reversed(range(count)):
            finer = _requiring_grad(x if i == 0 else outputs[i - 1])
            coarser = None
            if not column.first and i < count - 1:
                coarser = _requiring_grad(previous[i + 1])
            level = column.levels[i]
            parameters = list(level.parameters())
            inputs = [finer, *([coarser] if coarser is not None else [])]
            recomputed = level(finer, coarser)
            input_grads = torch.autograd.grad(
                recomputed, [*inputs, *parameters], grads[i], allow_unused=True
            )
            parameter_grads.update(zip(parameters, input_grads[len(inputs) :], strict=True))
            if i > 0:
                grads[i - 1] = grads[i - 1] + input_grads[0]
            else:
                x_grad = input_grads[0]
            alpha = column.alphas[i]
            with torch.no_grad():
                if column.first:  # no previous column: α multiplies zero
                    parameter_grads[alpha] = torch.zeros_like(alpha)
                    continue
                previous[i] = (outputs[i] - recomputed) / alpha
                parameter_grads[alpha] = _channel_sum(grads[i] * previous[i]).to(alpha.dtype)
                shortcut_grad = grads[i] * alpha
                previous_grads[i] = (
                    shortcut_grad
                    if previous_grads[i] is None
                    else previous_grads[i] + shortcut_grad
                )
                if coarser is not None and input_grads[1] is not None:
                    previous_grads[i + 1] = previous_grads[i + 1] + input_grads[1]
    return previous_grads, parameter_grads, x_grad

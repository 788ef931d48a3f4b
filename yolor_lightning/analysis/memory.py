"""Activation memory: the bytes autograd keeps from a forward pass for its backward pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def saved_activation_bytes(module: nn.Module, forward: Callable[[], Any]) -> int:
    """Bytes of the unique storages that autograd saves while `forward()` runs (counted with
    `torch.autograd.graph.saved_tensors_hooks`), the storages of `module`'s parameters left out:
    what a training step holds in activations between its forward and backward passes."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())

"""Model size and cost: parameter count and GFLOPs as the YOLO repositories report them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yolor_lightning.implicit import fold
from yolor_lightning.models.fusion import fuse


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, image_size: int, **forward_options: Any) -> float:
    """GFLOPs of one forward pass on a `1x3xSxS` input in eval mode (`forward_options` go to
    the model's forward, e.g. `auxiliary=True` to count a training-only branch).

    Counted by `torch.utils.flop_counter.FlopCounterMode`, i.e. 2 FLOPs per multiply-add of the
    convolutions and matrix products (what the YOLO repositories report as "GFLOPs").
    Normalisation, activations and pooling are not counted. Works on the meta device too.
    """
    parameter = next(model.parameters())
    images = torch.zeros(
        1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images, **forward_options)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def model_cost(network: nn.Module, image_size: int) -> dict[str, int | float]:
    """Parameters and GFLOPs of `network` as trained (with its auxiliary branch, if any), once
    its implicit knowledge is folded (`params_folded`, `gflops_folded`), and in its inference
    form (`params_fused`, `gflops_fused`: implicit knowledge folded, auxiliary branch dropped,
    batch norms and RepConvN branches fused into their convolutions, as YOLOv9 reports a fused
    model)."""
    folded = fold(network)
    auxiliary = getattr(network, "auxiliary", None) is not None
    training = {"auxiliary": True} if auxiliary else {}
    fused = fuse(folded.without_auxiliary() if auxiliary else folded)
    return {
        "params": count_parameters(network),
        "gflops": count_gflops(network, image_size, **training),
        "params_folded": count_parameters(folded),
        "gflops_folded": count_gflops(folded, image_size, **training),
        "params_fused": count_parameters(fused),
        "gflops_fused": count_gflops(fused, image_size),
    }

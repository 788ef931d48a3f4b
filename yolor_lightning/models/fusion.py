"""The inference form of a network: every block that has one (`fused()`: Conv + batch norm as
one biased convolution, RepConvN's two branches as one 3x3 convolution) replaced by it.

The result computes the same function in eval mode (batch norm with its running statistics) and
is what YOLOv9 calls the fused model; implicit knowledge is folded separately
(`yolor_lightning.implicit.fold`). Blocks whose norm does not fold (`foldable` false: group
norm, `model.norm=gn`, normalises each image by its own statistics) stay as they are:
convolution, GroupNorm, activation.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from torch import nn

from yolor_lightning.implicit import fold

if TYPE_CHECKING:
    from yolor_lightning.models.network import UnifiedNetwork


def fuse(network: nn.Module) -> nn.Module:
    """A copy of `network` with each outermost module that has `fused()` replaced by its
    result (a RepConvN is fused as a whole, not as its two Conv branches); blocks that are not
    `foldable` (group norm) are kept unfused."""
    fused = copy.deepcopy(network).eval()
    targets = []
    for name, module in fused.named_modules():
        inside = any(name.startswith(f"{outer}.") for outer in targets)
        if hasattr(module, "fused") and getattr(module, "foldable", True) and not inside:
            targets.append(name)
    for name in targets:
        fused.set_submodule(name, fused.get_submodule(name).fused())
    return fused


def inference_form(network: UnifiedNetwork) -> nn.Module:
    """What a deployed model computes, as a copy in eval mode: without the training-only
    auxiliary branch (PGI), implicit knowledge folded, then `fuse`d. It runs eagerly even where
    `network` was compiled (a copy drops the compiled call)."""
    return fuse(fold(network.without_auxiliary()))

"""The heads of the non-detection tasks, on the same neck features as the detection head.

Each reads the features through a 1x1 convolution, so its implicit-knowledge site (`task_cls`,
`task_emb`) sits on that convolution's input and folds into it like `fa`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from yolor_lightning.implicit import ImplicitConv2d, make_implicit


def _conv_with_site(
    in_channels: int, out_channels: int, site: str, options: Mapping[str, Any] | None
) -> nn.Module:
    """A 1x1 conv, with the implicit layer of `site` on its input when `options` enable it
    (concat doubles the width the conv reads)."""
    if not options:
        return nn.Conv2d(in_channels, out_channels, 1)
    widen = 2 if options["operator"] == "concat" else 1
    conv = nn.Conv2d(widen * in_channels, out_channels, 1)
    return ImplicitConv2d(conv, [make_implicit(channels=in_channels, site=site, **options)])


class ClassificationHead(nn.Module):
    """Multi-label image classification (`cls`): every neck level average-pooled, the levels
    concatenated, and one 1x1 conv (a linear layer) to `num_classes` logits `[B, nc]`."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        implicit: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.classifier = _conv_with_site(sum(in_channels), num_classes, "task_cls", implicit)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        pooled = torch.cat([level.mean(dim=(2, 3), keepdim=True) for level in features], dim=1)
        return self.classifier(pooled).flatten(1)


class EmbeddingHead(nn.Module):
    """Per-object embeddings (`emb`): per level, a 1x1 conv to `dim` channels `[B, dim, H, W]`.

    The maps are not normalised here: the task reads them at the cells assigned to each object
    (as the detection loss does), averages them per object and L2-normalises the result.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        dim: int = 128,
        implicit: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"embedding dimension must be > 0, got {dim}")
        self.dim = dim
        self.projections = nn.ModuleList(
            _conv_with_site(channels, dim, "task_emb", implicit) for channels in in_channels
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [
            projection(level) for projection, level in zip(self.projections, features, strict=True)
        ]

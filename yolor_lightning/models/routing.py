"""CBNet-style routing between two GELAN columns (YOLOv9's CBLinear / CBFuse): the maps of a
source column, projected by 1x1 convs, are added into a second column after each of its
downsamples. GELAN-E's backbone (two columns) and PGI's auxiliary branch of GELAN-M/C use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Routes(nn.ModuleList):
    """CBLinear: source level `j` (finest first) feeds target levels `0 .. j` through one 1x1
    conv to `widths[0] + ... + widths[j]` channels (`widths`: the target levels' channels)."""

    def __init__(self, source_channels: Sequence[int], widths: Sequence[int]):
        super().__init__(
            nn.Conv2d(channels, sum(widths[: level + 1]), 1)
            for level, channels in enumerate(source_channels)
        )
        self.widths = list(widths)

    def project(self, sources: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """Each source map projected and split into its parts for the target levels."""
        return [
            conv(x).split(self.widths[: level + 1], 1)
            for level, (conv, x) in enumerate(zip(self, sources, strict=True))
        ]

    @staticmethod
    def fuse(
        projected: Sequence[tuple[torch.Tensor, ...]], level: int, x: torch.Tensor
    ) -> torch.Tensor:
        """CBFuse: `x` (target level `level`) plus the parts of every source at that level or
        coarser, upsampled (nearest) to its size."""
        for parts in projected[level:]:
            x = x + F.interpolate(parts[level], size=x.shape[-2:], mode="nearest")
        return x

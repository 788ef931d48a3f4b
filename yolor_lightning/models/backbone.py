"""CSPDarknet53, the backbone of YOLOv4-CSP, and the stem-then-stages shape it shares with GELAN."""

from __future__ import annotations

import torch
from torch import nn

from yolor_lightning.models.blocks import (
    Bottleneck,
    Conv,
    CSPResidualStage,
    scale_channels,
    scale_repeats,
)

# (output channels, residual bottlenecks) of the CSP stages at strides 4, 8, 16, 32.
CSP_STAGES = ((128, 2), (256, 8), (512, 8), (1024, 4))


class StagedBackbone(nn.Module):
    """A `stem`, then `stages` applied one after the other; `forward` returns the outputs of the
    last `len(out_channels)` stages (finest first), the maps the neck reads."""

    stem: nn.Module
    stages: nn.ModuleList
    out_channels: tuple[int, ...]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features[-len(self.out_channels) :]


class CSPDarknet53(StagedBackbone):
    """Stem (3x3 conv, stride-2 conv, one residual block) then four stages of stride-2 conv + CSP.

    `forward` returns the features at strides 8, 16 and 32 (P3, P4, P5).
    """

    strides: tuple[int, ...] = (8, 16, 32)

    def __init__(self, width: float = 1.0, depth: float = 1.0):
        super().__init__()
        stem_channels = scale_channels(32, width)
        p1_channels = scale_channels(64, width)
        self.stem = nn.Sequential(
            Conv(3, stem_channels, 3),
            Conv(stem_channels, p1_channels, 3, stride=2),
            Bottleneck(p1_channels, p1_channels // 2),
        )
        stages = []
        in_channels = p1_channels
        for channels, repeats in CSP_STAGES:
            out_channels = scale_channels(channels, width)
            stages.append(
                nn.Sequential(
                    Conv(in_channels, out_channels, 3, stride=2),
                    CSPResidualStage(out_channels, out_channels, scale_repeats(repeats, depth)),
                )
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(scale_channels(c, width) for c, _ in CSP_STAGES[1:])

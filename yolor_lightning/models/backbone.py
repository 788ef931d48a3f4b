"""CSPDarknet53, the backbone of YOLOv4-CSP, and the stem-then-stages shape it shares with GELAN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from yolor_lightning.models.blocks import Bottleneck, Conv, CSPResidualStage

# Output channels of the stem's 3x3 conv and of its stride-2 conv (and residual block), full size.
CSP_STEM = (32, 64)
# (output channels, residual bottlenecks) of the CSP stages at strides 4, 8, 16, 32, full size.
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

    `stem`: the output channels of the 3x3 conv and of the stride-2 conv; `stages`: (output
    channels, residual bottlenecks) of each stage (the full-size model's by default; a named size
    gives its own, `models.yolo.MODEL_SIZES`). `forward` returns the features at strides 8, 16
    and 32 (P3, P4, P5).
    """

    strides: tuple[int, ...] = (8, 16, 32)

    def __init__(
        self,
        stem: tuple[int, int] = CSP_STEM,
        stages: Sequence[tuple[int, int]] = CSP_STAGES,
    ):
        super().__init__()
        stem_channels, p1_channels = stem
        self.stem = nn.Sequential(
            Conv(3, stem_channels, 3),
            Conv(stem_channels, p1_channels, 3, stride=2),
            Bottleneck(p1_channels, p1_channels // 2),
        )
        layers = []
        in_channels = p1_channels
        for out_channels, repeats in stages:
            layers.append(
                nn.Sequential(
                    Conv(in_channels, out_channels, 3, stride=2),
                    CSPResidualStage(out_channels, out_channels, repeats),
                )
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(layers)
        self.out_channels = tuple(c for c, _ in stages[1:])

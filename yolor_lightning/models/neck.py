"""CSP-PAN neck of YOLOv4-CSP: SPPCSP on P5, a top-down and a bottom-up path of CSP stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolor_lightning.models.blocks import SPPCSP, Conv, CSPPlainStage

# Width of the neck at P3, P4, P5 for the full-size model; each level's output conv doubles it.
NECK_CHANNELS = (128, 256, 512)
# Plain bottlenecks of each of the neck's CSP stages, full size.
NECK_REPEATS = 2


class CSPPAN(nn.Module):
    """Path-aggregation neck over the backbone features (finest level first), `channels` wide at
    each level (finest first) with `repeats` plain bottlenecks in each CSP stage and
    `spp_repeats` conv pairs after SPPCSP's pools (the full-size model's by default; a named size
    gives its own, `models.yolo.MODEL_SIZES`).

    Returns one map per level, each after its final 3x3 conv (256/512/1024 channels at full
    size): these are the inputs of the head's prediction convs.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        channels: tuple[int, ...] = NECK_CHANNELS,
        repeats: int = NECK_REPEATS,
        spp_repeats: int = 1,
    ):
        super().__init__()
        levels = list(channels)
        if len(in_channels) != len(levels):
            raise ValueError(f"CSPPAN expects {len(levels)} input levels, got {len(in_channels)}")
        self.spp = SPPCSP(in_channels[-1], levels[-1], repeats=spp_repeats)
        # top-down path: index i builds level i from level i + 1 and backbone level i
        self.reduce = nn.ModuleList(
            Conv(levels[i + 1], levels[i], 1) for i in range(len(levels) - 1)
        )
        self.lateral = nn.ModuleList(
            Conv(in_channels[i], levels[i], 1) for i in range(len(levels) - 1)
        )
        self.top_down = nn.ModuleList(
            CSPPlainStage(2 * levels[i], levels[i], repeats) for i in range(len(levels) - 1)
        )
        # bottom-up path: index i - 1 builds level i from level i - 1 and top-down level i
        self.downsample = nn.ModuleList(
            Conv(levels[i - 1], levels[i], 3, stride=2) for i in range(1, len(levels))
        )
        self.bottom_up = nn.ModuleList(
            CSPPlainStage(2 * levels[i], levels[i], repeats) for i in range(1, len(levels))
        )
        self.output = nn.ModuleList(Conv(c, 2 * c, 3) for c in levels)
        self.out_channels = tuple(2 * c for c in levels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        top_down = [self.spp(features[-1])]
        for i in reversed(range(len(features) - 1)):
            lateral = self.lateral[i](features[i])
            upsampled = F.interpolate(
                self.reduce[i](top_down[0]), size=lateral.shape[-2:], mode="nearest"
            )
            top_down.insert(0, self.top_down[i](torch.cat((lateral, upsampled), dim=1)))
        outputs = [top_down[0]]
        for i in range(1, len(features)):
            downsampled = self.downsample[i - 1](outputs[-1])
            outputs.append(self.bottom_up[i - 1](torch.cat((downsampled, top_down[i]), dim=1)))
        return [conv(x) for conv, x in zip(self.output, outputs, strict=True)]

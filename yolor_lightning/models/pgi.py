"""PGI's auxiliary branch (YOLOv9, WongKinYiu/yolov9 `models/detect/yolov9-*.yaml`): a
training-only path whose own det head's loss sends extra gradient into the main backbone, and
that export drops (the deployed network is GELAN).

- GELAN-M/C (`RoutedAuxiliary`, the "multi-level reversible auxiliary branch"): a second GELAN
  backbone from the image; after each of its downsamples, the main backbone's maps at that
  level and the coarser ones, projected by 1x1 convs (CBLinear) and upsampled, are added in
  (CBFuse).
- GELAN-T/S (`TopDownAuxiliary`): an extra top-down path (GELAN's neck without its bottom-up
  half) on the main backbone's maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from yolor_lightning.models.gelan import GELANBackbone, GELANTopDown, gelan_size, round_channels
from yolor_lightning.models.registry import AUXILIARY_BRANCHES, DETECTION_HEADS

HeadFactory = Callable[[tuple[int, ...]], nn.Module]
"""Builds a branch's det head on maps of the given channels."""


class RoutedAuxiliary(nn.Module):
    """The auxiliary GELAN backbone fed by the main backbone's maps (`backbone_channels`,
    P3 to P5), and its det head."""

    def __init__(self, size: str, backbone_channels: Sequence[int], make_head: HeadFactory):
        super().__init__()
        self.column = GELANBackbone(size)
        self.widths = [round_channels(down) for down, _ in gelan_size(size).stages]
        self.routes = nn.ModuleList(
            nn.Conv2d(channels, sum(self.widths[: level + 1]), 1)
            for level, channels in enumerate(backbone_channels)
        )
        self.head = make_head(self.column.out_channels)

    def columns(self, images: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The auxiliary backbone's maps, finest first."""
        routed = [
            route(x).split(self.widths[: level + 1], 1)
            for level, (route, x) in enumerate(zip(self.routes, features, strict=True))
        ]
        x = self.column.stem(images)
        outputs = []
        for level, (downsample, block) in enumerate(self.column.stages):
            x = downsample(x)
            for source in routed[level:]:
                x = x + F.interpolate(source[level], size=x.shape[-2:], mode="nearest")
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.head(self.columns(images, features))


class TopDownAuxiliary(nn.Module):
    """An extra top-down path on the main backbone's maps, and its det head."""

    def __init__(self, size: str, backbone_channels: Sequence[int], make_head: HeadFactory):
        super().__init__()
        self.path = GELANTopDown(tuple(backbone_channels), size)
        self.head = make_head(self.path.out_channels)

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.head(self.path(features))


@AUXILIARY_BRANCHES.register("pgi")
def pgi(
    size: str, backbone_channels: Sequence[int], num_classes: int, strides: Sequence[int], head: str
) -> nn.Module:
    """YOLOv9's auxiliary branch of a GELAN size, with a plain `head` (no implicit sites)."""
    branch = TopDownAuxiliary if gelan_size(size).light else RoutedAuxiliary
    return branch(
        size,
        backbone_channels,
        lambda channels: DETECTION_HEADS.build(head, channels, num_classes, strides, None),
    )

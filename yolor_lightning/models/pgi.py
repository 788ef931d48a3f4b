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
from torch import nn

from yolor_lightning.models.gelan import GELAN_SIZES, GELANBackbone, GELANTopDown, gelan_size
from yolor_lightning.models.registry import AUXILIARY_BRANCHES, DETECTION_HEADS
from yolor_lightning.models.routing import Routes

HeadFactory = Callable[[tuple[int, ...]], nn.Module]
"""Builds a branch's det head on maps of the given channels."""

PGI_SIZES = tuple(name for name, spec in GELAN_SIZES.items() if not spec.dual)
"""The GELAN sizes with an auxiliary branch (not E: its branch is not built)."""


class RoutedAuxiliary(nn.Module):
    """The auxiliary GELAN column, into which the main backbone's maps (`backbone_channels`,
    P3 to P5) are routed after its P3 to P5 downsamples (`models.routing`), and its det head."""

    def __init__(self, size: str, backbone_channels: Sequence[int], make_head: HeadFactory):
        super().__init__()
        self.column = GELANBackbone(size)
        self.routes = Routes(backbone_channels, self.column.widths[-len(backbone_channels) :])
        self.head = make_head(self.column.out_channels)

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        projected = self.routes.project(features)
        return self.head(self.column.level_maps(images, self.routes, projected)[-3:])


class TopDownAuxiliary(nn.Module):
    """An extra top-down path on the main backbone's maps, and its det head."""

    def __init__(self, size: str, backbone_channels: Sequence[int], make_head: HeadFactory):
        super().__init__()
        self.path = GELANTopDown(tuple(backbone_channels), size)
        self.head = make_head(self.path.out_channels)

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.head(self.path(features))


@AUXILIARY_BRANCHES.register("pgi", sizes=PGI_SIZES)
def pgi(
    size: str, backbone_channels: Sequence[int], num_classes: int, strides: Sequence[int], head: str
) -> nn.Module:
    """YOLOv9's auxiliary branch of a GELAN size, with a plain `head` (no implicit sites)."""
    spec = gelan_size(size)
    if spec.dual:
        raise ValueError(
            "YOLOv9-E's auxiliary branch (a top-down path on the first backbone column) is not "
            f"built: model.auxiliary=pgi takes sizes {', '.join(PGI_SIZES)}"
        )
    branch = TopDownAuxiliary if spec.light else RoutedAuxiliary
    return branch(
        size,
        backbone_channels,
        lambda channels: DETECTION_HEADS.build(head, channels, num_classes, strides, None),
    )

"""GELAN, YOLOv9's network (WongKinYiu/yolov9 `models/detect/gelan-{t,s,m,c,e}.yaml`): the
backbone (two stride-2 convs, an ELAN block, then three downsample + RepNCSPELAN4 stages; for
GELAN-E two such columns, routed) and the neck (SPPELAN on P5, a top-down and a bottom-up path
of RepNCSPELAN4 blocks).

Each size is data (`GELAN_SIZES`), written as the official yaml files write it; every block's
output channels are rounded up to a multiple of 8 as the official `parse_model` does (GELAN-M's
180-channel downsample of the neck becomes 184 channels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from yolor_lightning.models.backbone import StagedBackbone
from yolor_lightning.models.gelan_blocks import (
    ELAN1,
    SPPELAN,
    AConv,
    ADown,
    RepNCSPELAN4,
    YoloV9Conv,
)
from yolor_lightning.models.registry import BACKBONES, NECKS
from yolor_lightning.models.routing import Routes

ELAN = tuple[int, int, int]
"""A RepNCSPELAN4's (c2, c3, c4): output channels, split width, branch width."""


@dataclass(frozen=True)
class GELANSize:
    """One GELAN size, as its yaml file lists it (finest level first where there are levels)."""

    stem: tuple[int, int]  # the stride-2 convs to P1 and P2
    p2: ELAN  # the block at P2: ELAN1 when `light`, else RepNCSPELAN4
    downsample: str  # aconv | adown
    stages: tuple[tuple[int, ELAN], ...]  # P3, P4, P5: (downsample channels, block)
    spp: tuple[int, int]  # SPPELAN (c2, c3)
    top_down: tuple[ELAN, ELAN]  # the neck's blocks at P4 then P3
    bottom_up: tuple[tuple[int, ELAN], tuple[int, ELAN]]  # P4, P5: (downsample channels, block)
    repeats: int  # RepNCSP depth of every RepNCSPELAN4
    light: bool = False
    dual: bool = False  # two routed backbone columns (GELAN-E)


GELAN_SIZES: dict[str, GELANSize] = {
    "t": GELANSize(
        stem=(16, 32),
        p2=(32, 32, 16),
        downsample="aconv",
        stages=((64, (64, 64, 32)), (96, (96, 96, 48)), (128, (128, 128, 64))),
        spp=(128, 64),
        top_down=((96, 96, 48), (64, 64, 32)),
        bottom_up=((48, (96, 96, 48)), (64, (128, 128, 64))),
        repeats=3,
        light=True,
    ),
    "s": GELANSize(
        stem=(32, 64),
        p2=(64, 64, 32),
        downsample="aconv",
        stages=((128, (128, 128, 64)), (192, (192, 192, 96)), (256, (256, 256, 128))),
        spp=(256, 128),
        top_down=((192, 192, 96), (128, 128, 64)),
        bottom_up=((96, (192, 192, 96)), (128, (256, 256, 128))),
        repeats=3,
        light=True,
    ),
    "m": GELANSize(
        stem=(32, 64),
        p2=(128, 128, 64),
        downsample="aconv",
        stages=((240, (240, 240, 120)), (360, (360, 360, 180)), (480, (480, 480, 240))),
        spp=(480, 240),
        top_down=((360, 360, 180), (240, 240, 120)),
        bottom_up=((180, (360, 360, 180)), (240, (480, 480, 240))),
        repeats=1,
    ),
    "c": GELANSize(
        stem=(64, 128),
        p2=(256, 128, 64),
        downsample="adown",
        stages=((256, (512, 256, 128)), (512, (512, 512, 256)), (512, (512, 512, 256))),
        spp=(512, 256),
        top_down=((512, 512, 256), (256, 256, 128)),
        bottom_up=((256, (512, 512, 256)), (512, (512, 512, 256))),
        repeats=1,
    ),
    "e": GELANSize(
        stem=(64, 128),
        p2=(256, 128, 64),
        downsample="adown",
        stages=((256, (512, 256, 128)), (512, (1024, 512, 256)), (1024, (1024, 512, 256))),
        spp=(512, 256),
        top_down=((512, 512, 256), (256, 256, 128)),
        bottom_up=((256, (512, 512, 256)), (512, (512, 1024, 512))),
        repeats=2,
        dual=True,
    ),
}
"""GELAN-T, S, M, C, E as in the official yaml files."""

DOWNSAMPLES: dict[str, type[nn.Module]] = {"aconv": AConv, "adown": ADown}


def round_channels(channels: int, divisor: int = 8) -> int:
    """Output channels rounded up to a multiple of `divisor` (the official `make_divisible`)."""
    return math.ceil(channels / divisor) * divisor


def gelan_size(size: str) -> GELANSize:
    if size not in GELAN_SIZES:
        raise ValueError(f"unknown GELAN size {size!r}; allowed sizes: {', '.join(GELAN_SIZES)}")
    return GELAN_SIZES[size]


def _elan(c1: int, block: ELAN, repeats: int) -> RepNCSPELAN4:
    c2, c3, c4 = block
    return RepNCSPELAN4(c1, round_channels(c2), c3, c4, repeats)


def _downsample(kind: str, c1: int, c2: int) -> nn.Module:
    return DOWNSAMPLES[kind](c1, round_channels(c2))


class GELANBackbone(StagedBackbone):
    """GELAN's backbone; `forward` returns the features at strides 8, 16, 32 (P3, P4, P5)."""

    strides: tuple[int, ...] = (8, 16, 32)

    def __init__(self, size: str):
        super().__init__()
        spec = gelan_size(size)
        p1, p2 = (round_channels(c) for c in spec.stem)
        c2, c3, c4 = spec.p2
        p2_block = (
            ELAN1(p2, round_channels(c2), c3, c4)
            if spec.light
            else RepNCSPELAN4(p2, round_channels(c2), c3, c4, spec.repeats)
        )
        self.stem = nn.Sequential(
            YoloV9Conv(3, p1, 3, stride=2), YoloV9Conv(p1, p2, 3, stride=2), p2_block
        )
        stages = []
        channels = round_channels(c2)
        out_channels = []
        for down, block in spec.stages:
            stage = nn.Sequential(
                _downsample(spec.downsample, channels, down),
                _elan(round_channels(down), block, spec.repeats),
            )
            channels = round_channels(block[0])
            out_channels.append(channels)
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(out_channels)
        self.widths = (p1, p2, *(round_channels(down) for down, _ in spec.stages))
        self.level_channels = (p1, round_channels(c2), *out_channels)

    def levels(self) -> list[tuple[nn.Module, nn.Module]]:
        """(downsample, block) of each level P1 .. P5 (P1 has no block)."""
        return [
            (self.stem[0], nn.Identity()),
            (self.stem[1], self.stem[2]),
            *((stage[0], stage[1]) for stage in self.stages),
        ]

    def level_maps(
        self, images: torch.Tensor, routes: Routes | None = None, projected: Sequence = ()
    ) -> list[torch.Tensor]:
        """The maps of all levels P1 .. P5; with `routes`, the `projected` maps of a source
        column are fused in after the downsamples of the last `len(projected)` levels."""
        first = len(self.widths) - len(projected)
        x, maps = images, []
        for level, (downsample, block) in enumerate(self.levels()):
            x = downsample(x)
            if routes is not None and level >= first:
                x = routes.fuse(projected, level - first, x)
            x = block(x)
            maps.append(x)
        return maps


class DualGELANBackbone(nn.Module):
    """GELAN-E's backbone: a first GELAN column, whose maps at every level (P1 .. P5) are routed
    into a second column (`models.routing`); returns the second column's P3, P4, P5."""

    strides: tuple[int, ...] = (8, 16, 32)

    def __init__(self, size: str):
        super().__init__()
        self.first = GELANBackbone(size)
        self.second = GELANBackbone(size)
        self.routes = Routes(self.first.level_channels, self.second.widths)
        self.out_channels = self.second.out_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        projected = self.routes.project(self.first.level_maps(images))
        return self.second.level_maps(images, self.routes, projected)[-3:]


@BACKBONES.register("gelan", sizes=tuple(GELAN_SIZES))
def gelan_backbone(size: str) -> nn.Module:
    """GELAN's backbone of a size: one column, or two routed ones for GELAN-E."""
    return DualGELANBackbone(size) if gelan_size(size).dual else GELANBackbone(size)


class GELANTopDown(nn.Module):
    """The top-down half of GELAN's neck over P3, P4, P5: SPPELAN on P5, then at P4 and P3 a
    block reading the upsampled coarser map concatenated with the backbone level. Returns the
    three maps finest first (at P5, the SPPELAN output); alone, it is the auxiliary path of
    YOLOv9-T/S (`models.pgi`)."""

    def __init__(self, in_channels: tuple[int, ...], size: str):
        super().__init__()
        spec = gelan_size(size)
        if len(in_channels) != 3:
            raise ValueError(f"GELAN's neck expects 3 input levels, got {len(in_channels)}")
        p3, p4, p5 = in_channels
        spp = round_channels(spec.spp[0])
        self.spp = SPPELAN(p5, spp, spec.spp[1])
        td4, td3 = spec.top_down
        self.top_down = nn.ModuleList(
            [
                _elan(p3 + round_channels(td4[0]), td3, spec.repeats),
                _elan(p4 + spp, td4, spec.repeats),
            ]
        )
        self.out_channels = (round_channels(td3[0]), round_channels(td4[0]), spp)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        top_down = [self.spp(features[-1])]
        for i in reversed(range(len(features) - 1)):
            upsampled = F.interpolate(top_down[0], size=features[i].shape[-2:], mode="nearest")
            top_down.insert(0, self.top_down[i](torch.cat((upsampled, features[i]), 1)))
        return top_down


@NECKS.register("gelan_pan")
class GELANNeck(GELANTopDown):
    """GELAN's path-aggregation neck: the top-down half (`GELANTopDown`), then bottom-up, each
    level's block reads the downsampled finer output concatenated with the top-down map.
    Returns the bottom-up outputs, finest first."""

    def __init__(self, in_channels: tuple[int, ...], size: str):
        super().__init__(in_channels, size)
        spec = gelan_size(size)
        (down4, bu4), (down5, bu5) = spec.bottom_up
        top_down = self.out_channels
        finer = (top_down[0], round_channels(bu4[0]))
        self.downsample = nn.ModuleList(
            _downsample(spec.downsample, c, down)
            for c, down in zip(finer, (down4, down5), strict=True)
        )
        self.bottom_up = nn.ModuleList(
            _elan(round_channels(down) + c, block, spec.repeats)
            for c, (down, block) in zip(top_down[1:], spec.bottom_up, strict=True)
        )
        self.out_channels = (finer[0], finer[1], round_channels(bu5[0]))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        top_down = super().forward(features)
        outputs = [top_down[0]]
        for i in range(1, len(features)):
            downsampled = self.downsample[i - 1](outputs[-1])
            outputs.append(self.bottom_up[i - 1](torch.cat((downsampled, top_down[i]), 1)))
        return outputs

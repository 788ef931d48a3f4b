"""YOLOv9's anchor-free detection head (the official `DDetect`): per level a box branch of
`4 x reg_max` distribution logits decoded by DFL and a class branch, no objectness, one anchor
point at each cell centre; and its implicit-knowledge sites.

Sites: `fa` on the input of each branch's final 1x1 conv, `pr` on its output (the box branch's
final conv is grouped, one group per box side; both sites fold into it, see
`yolor_lightning.implicit.ImplicitConv2d`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from yolor_lightning.implicit import ImplicitConv2d, make_implicit
from yolor_lightning.models.gelan_blocks import YoloV9Conv
from yolor_lightning.models.registry import DETECTION_HEADS
from yolor_lightning.models.sites import enabled_sites

REG_MAX = 16
"""Bins of each box side's distribution: distances 0 .. 15 strides."""

DFL_SITE_OPERATORS: dict[str, tuple[str, ...]] = {"fa": ("add", "mul"), "pr": ("add", "mul")}
"""The detection sites the DFL head has and their operators (the per-anchor sites fa*, pr*
need anchors; a concat before the grouped box conv would not fold)."""


class DistributionDecoder(nn.Module):
    """DFL's expectation: the softmax of each side's `reg_max` logits times the bin values
    0 .. reg_max - 1. The bin values are a frozen parameter, as in the official `DFL` (whose
    parameter counts include them)."""

    def __init__(self, reg_max: int = REG_MAX):
        super().__init__()
        self.reg_max = reg_max
        self.bins = nn.Parameter(torch.empty(reg_max), requires_grad=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.bins.copy_(torch.arange(self.reg_max, dtype=self.bins.dtype))

    def forward(self, logits: Tensor) -> Tensor:
        return expected_distances(logits, self.bins)


def expected_distances(logits: Tensor, bins: Tensor) -> Tensor:
    """`[..., 4 * reg_max]` logits of the four sides to `[..., 4]` expected distances (in
    strides): each side's softmax over its `reg_max` bins times the bin values `bins`."""
    distribution = logits.unflatten(-1, (4, len(bins))).softmax(-1)
    return distribution @ bins.to(distribution.dtype)


def anchor_points(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Cell centres of every level in grid units (`[N, 2]` x, y; rows then columns, finest level
    first) and the stride of each (`[N, 1]`)."""
    points, point_strides = [], []
    for (height, width), stride in zip(shapes, strides, strict=True):
        ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
        xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
        points.append(grid)
        point_strides.append(torch.full((height * width, 1), float(stride), device=device))
    return torch.cat(points), torch.cat(point_strides)


def distances_to_boxes(distances: Tensor, points: Tensor) -> Tensor:
    """(left, top, right, bottom) distances from `points` to xyxy boxes (same units)."""
    left_top, right_bottom = distances.chunk(2, -1)
    return torch.cat((points - left_top, points + right_bottom), -1)


def boxes_to_distances(boxes: Tensor, points: Tensor) -> Tensor:
    """xyxy boxes to their (left, top, right, bottom) distances from `points` (same units)."""
    return torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), -1)


def flatten_levels(
    raw: Sequence[Tensor], reg_max: int, num_classes: int, strides: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The DFL head's raw per-level outputs with all levels flattened: box logits
    `[B, N, 4 reg_max]`, class logits `[B, N, nc]`, anchor points `[N, 2]` (grid units) and
    their strides `[N, 1]`."""
    flat = torch.cat([level.flatten(2) for level in raw], 2).transpose(1, 2)
    box, cls = flat.split((4 * reg_max, num_classes), -1)
    points, point_strides = anchor_points(
        [level.shape[-2:] for level in raw], strides, raw[0].device
    )
    return box, cls, points, point_strides


@DETECTION_HEADS.register("dfl")
class DFLHead(nn.Module):
    """Per level `[B, 4 * reg_max + nc, H, W]` raw logits: the box distributions (left, top,
    right, bottom, `reg_max` bins each) then the class logits. `decode` turns them into boxes.

    Widths as the official `DDetect`: box branch `max(C3 / 4, 4 reg_max, 16)` rounded up to a
    multiple of 4, class branch `max(C3, min(2 nc, 128))` (C3: the finest level's channels).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int],
        implicit: Mapping[str, Mapping[str, Any]] | None = None,
        reg_max: int = REG_MAX,
    ):
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(
                f"one stride per level expected: {len(in_channels)} maps, {len(strides)} strides"
            )
        sites = enabled_sites(implicit, tasks=("det",))
        for site, options in sites.items():
            if options["operator"] not in DFL_SITE_OPERATORS.get(site, ()):
                raise ValueError(
                    f"implicit site {site} with operator {options['operator']!r} is not "
                    f"available on the dfl head; its sites: "
                    + ", ".join(f"{s} ({'|'.join(o)})" for s, o in DFL_SITE_OPERATORS.items())
                )
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(int(s) for s in strides)
        box_width = math.ceil(max(in_channels[0] // 4, 4 * reg_max, 16) / 4) * 4
        cls_width = max(in_channels[0], min(2 * num_classes, 128))
        self.box = nn.ModuleList(
            nn.Sequential(
                YoloV9Conv(c, box_width, 3),
                YoloV9Conv(box_width, box_width, 3, groups=4),
                _predictor(box_width, 4 * reg_max, sites, groups=4),
            )
            for c in in_channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(
                YoloV9Conv(c, cls_width, 3),
                YoloV9Conv(cls_width, cls_width, 3),
                _predictor(cls_width, num_classes, sites),
            )
            for c in in_channels
        )
        self.dfl = DistributionDecoder(reg_max)
        self.init_output_priors()

    @torch.no_grad()
    def init_output_priors(self) -> None:
        """The official bias initialisation: box logits 1.0, class logits for about 5 objects
        per 640x640 image over the classes. Applied after each (re-)initialisation."""
        for box, cls, stride in zip(self.box, self.cls, self.strides, strict=True):
            _conv(box[-1]).bias.fill_(1.0)
            _conv(cls[-1]).bias.fill_(math.log(5 / self.num_classes / (640 / stride) ** 2))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [
            torch.cat((box(x), cls(x)), 1)
            for box, cls, x in zip(self.box, self.cls, features, strict=True)
        ]

    def decode(self, raw: Sequence[Tensor]) -> Tensor:
        """Raw logits to `[B, N, 5 + nc]`: cx, cy, w, h in input pixels, an objectness of 1 (this
        head has none, so a score is the class probability) and the class probabilities."""
        box, cls, points, strides = flatten_levels(
            raw, self.reg_max, self.num_classes, self.strides
        )
        xyxy = distances_to_boxes(self.dfl(box), points) * strides
        cxcywh = box_convert(xyxy, "xyxy", "cxcywh")
        return torch.cat((cxcywh, torch.ones_like(cls[..., :1]), cls.sigmoid()), -1)


def _predictor(
    in_channels: int, out_channels: int, sites: Mapping[str, Mapping[str, Any]], groups: int = 1
) -> nn.Module:
    """A branch's final 1x1 conv, with `fa` on its input and `pr` on its output when enabled."""
    conv = nn.Conv2d(in_channels, out_channels, 1, groups=groups)
    if not sites:
        return conv
    before = (
        [make_implicit(channels=in_channels, site="fa", **sites["fa"])] if "fa" in sites else []
    )
    after = (
        [make_implicit(channels=out_channels, site="pr", **sites["pr"])] if "pr" in sites else []
    )
    return ImplicitConv2d(conv, before, after)


def _conv(predictor: nn.Module) -> nn.Conv2d:
    return predictor.conv if isinstance(predictor, ImplicitConv2d) else predictor

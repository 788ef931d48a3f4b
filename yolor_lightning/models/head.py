"""Anchor-based YOLO detection head: one 1x1 prediction conv per level, its implicit-knowledge
sites, and its box decoding."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from yolor_lightning.implicit import ImplicitConv2d, make_implicit
from yolor_lightning.models.registry import DETECTION_HEADS
from yolor_lightning.models.sites import enabled_sites

Anchors = Sequence[Sequence[Sequence[float]]]

# COCO anchors (w, h) in pixels for strides 8, 16, 32.
DEFAULT_ANCHORS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)


class DetectionHead(nn.Module):
    """Per level, a 1x1 conv predicting `A * (5 + num_classes)` channels.

    Raw output per level: `[B, A, H, W, 5 + nc]` logits in the order x, y, w, h, objectness,
    classes. `anchors` are (w, h) pairs in input pixels, one sequence of pairs per level.
    `implicit` maps the detection sites (fa, pr, fa_star, pr_star of `SITE_OPERATORS`) to their
    options; with any site enabled, each prediction conv is an `ImplicitConv2d`
    (`yolor_lightning.implicit.fold` makes it plain).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        anchors: Anchors,
        strides: Sequence[int],
        implicit: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        anchor_wh = torch.tensor(
            [[float(v) for pair in level for v in pair] for level in anchors]
        ).reshape(len(anchors), -1, 2)
        if not (len(in_channels) == len(anchors) == len(strides)):
            raise ValueError(
                f"one entry per level expected: {len(in_channels)} feature maps, "
                f"{len(anchors)} anchor sets, {len(strides)} strides"
            )
        self.num_classes = num_classes
        self.num_outputs = 5 + num_classes
        self.num_anchors = anchor_wh.shape[1]
        self.strides = tuple(int(s) for s in strides)
        self.register_buffer("anchors", anchor_wh)
        sites = enabled_sites(implicit, tasks=("det",))
        widen = 2 if sites.get("fa", {}).get("operator") == "concat" else 1
        convs = [nn.Conv2d(widen * c, self.num_anchors * self.num_outputs, 1) for c in in_channels]
        self.predictors = nn.ModuleList(
            self._with_sites(conv, c, sites) if sites else conv
            for conv, c in zip(convs, in_channels, strict=True)
        )
        self.init_output_priors()

    @torch.no_grad()
    def init_output_priors(self) -> None:
        """Add the bias priors of the official code to the prediction convs' initial biases:
        about 8 objects per 640x640 image, class probability 0.6 / (nc - 0.99). Applied once
        after each (re-)initialisation of the convs."""
        for predictor, stride in zip(self.predictors, self.strides, strict=True):
            conv = predictor.conv if isinstance(predictor, ImplicitConv2d) else predictor
            bias = conv.bias.view(self.num_anchors, self.num_outputs)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

    def _with_sites(
        self, conv: nn.Conv2d, channels: int, sites: Mapping[str, Mapping[str, Any]]
    ) -> ImplicitConv2d:
        """`conv` with the enabled sites around it: fa then fa* on its input, pr then pr* on its
        output (`channels`: the features' width before an fa concat)."""
        anchors, outputs = self.num_anchors, conv.out_channels
        before, after = [], []
        if "fa" in sites:
            before.append(make_implicit(channels=channels, site="fa", **sites["fa"]))
        if "fa_star" in sites:
            before.append(
                make_implicit(
                    channels=conv.in_channels, groups=anchors, site="fa_star", **sites["fa_star"]
                )
            )
        if "pr" in sites:
            after.append(make_implicit(channels=outputs, site="pr", **sites["pr"]))
        if "pr_star" in sites:
            wh = [a * self.num_outputs + k for a in range(anchors) for k in (2, 3)]
            after.append(
                make_implicit(
                    channels=outputs,
                    groups=anchors,
                    positions=wh,
                    site="pr_star",
                    **sites["pr_star"],
                )
            )
        return ImplicitConv2d(conv, before, after)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [
            predictor(x)
            .unflatten(1, (self.num_anchors, self.num_outputs))
            .permute(0, 1, 3, 4, 2)
            .contiguous()
            for predictor, x in zip(self.predictors, features, strict=True)
        ]

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw logits to `[B, N, 5 + nc]`: cx, cy, w, h in input pixels, then probabilities.

        `xy = (2 sigmoid(t_xy) - 0.5 + cell) * stride`, `wh = (2 sigmoid(t_wh))^2 * anchor`;
        N runs over levels, then anchors, then rows, then columns.
        """
        decoded = []
        for level, (pred, stride) in enumerate(zip(raw, self.strides, strict=True)):
            batch, _, height, width, _ = pred.shape
            prob = pred.sigmoid()
            rows = torch.arange(height, device=pred.device, dtype=prob.dtype)
            cols = torch.arange(width, device=pred.device, dtype=prob.dtype)
            grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # [H, W, (x, y)]
            xy = (prob[..., :2] * 2 - 0.5 + grid) * stride
            wh = (prob[..., 2:4] * 2) ** 2 * self.anchors[level].view(1, -1, 1, 1, 2)
            decoded.append(
                torch.cat((xy, wh, prob[..., 4:]), dim=-1).reshape(batch, -1, pred.shape[-1])
            )
        return torch.cat(decoded, dim=1)


@DETECTION_HEADS.register("anchor")
def anchor_head(
    in_channels: Sequence[int],
    num_classes: int,
    strides: Sequence[int],
    implicit: Mapping[str, Mapping[str, Any]] | None = None,
) -> DetectionHead:
    """The anchor head with the COCO anchors (`DEFAULT_ANCHORS`, strides 8/16/32)."""
    return DetectionHead(in_channels, num_classes, DEFAULT_ANCHORS, strides, implicit)

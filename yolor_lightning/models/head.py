"""Anchor-based YOLO detection head: one 1x1 prediction conv per level, and its box decoding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

Anchors = Sequence[Sequence[Sequence[float]]]


class DetectionHead(nn.Module):
    """Per level, a 1x1 conv predicting `A * (5 + num_classes)` channels.

    Raw output per level: `[B, A, H, W, 5 + nc]` logits in the order x, y, w, h, objectness,
    classes. `anchors` are (w, h) pairs in input pixels, one sequence of pairs per level.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        anchors: Anchors,
        strides: Sequence[int],
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
        self.predictors = nn.ModuleList(
            nn.Conv2d(c, self.num_anchors * self.num_outputs, 1) for c in in_channels
        )
        self._init_prediction_biases()

    @torch.no_grad()
    def _init_prediction_biases(self) -> None:
        """Priors of the official code: about 8 objects per 640x640 image, class probability
        0.6 / (nc - 0.99)."""
        for predictor, stride in zip(self.predictors, self.strides, strict=True):
            bias = predictor.bias.view(self.num_anchors, self.num_outputs)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

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

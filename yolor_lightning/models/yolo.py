"""YOLOv4-CSP: CSPDarknet53 -> CSP-PAN -> anchor-based head, and its named sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from yolor_lightning.models.backbone import CSPDarknet53
from yolor_lightning.models.head import Anchors, DetectionHead
from yolor_lightning.models.neck import CSPPAN

# COCO anchors (w, h) in pixels for strides 8, 16, 32.
DEFAULT_ANCHORS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)

# name -> (width, depth) multipliers of the full-size (official) YOLOv4-CSP.
MODEL_SIZES: dict[str, tuple[float, float]] = {
    "tiny": (0.1875, 0.33),
    "small": (0.25, 0.33),
    "medium": (0.5, 0.67),
    "full": (1.0, 1.0),
}


class YOLOv4CSP(nn.Module):
    """YOLOv4-CSP detector; `forward` returns the head's raw per-level logits
    `[B, A, H/s, W/s, 5 + nc]`, `head.decode` turns them into boxes. `implicit` configures the
    head's implicit-knowledge sites (see `DetectionHead`)."""

    def __init__(
        self,
        num_classes: int = 80,
        width: float = 1.0,
        depth: float = 1.0,
        anchors: Anchors = DEFAULT_ANCHORS,
        strides: Sequence[int] = (8, 16, 32),
        implicit: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        self.backbone = CSPDarknet53(width, depth)
        if tuple(strides) != self.backbone.strides:
            raise ValueError(
                f"strides must be the backbone's output strides {self.backbone.strides}, "
                f"got {tuple(strides)}"
            )
        self.neck = CSPPAN(self.backbone.out_channels, width, depth)
        self.head = DetectionHead(self.neck.out_channels, num_classes, anchors, strides, implicit)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.neck(self.backbone(images)))


def build_yolov4_csp(
    size: str, num_classes: int, implicit: Mapping[str, Mapping[str, Any]] | None = None
) -> YOLOv4CSP:
    """YOLOv4-CSP of a named size (a key of `MODEL_SIZES`) with default anchors and strides, and
    the implicit-knowledge sites of `implicit` (site -> options, e.g.
    `{"fa": {"operator": "add"}, "pr": {"operator": "mul", "prior": "vector"}}`)."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; allowed sizes: {', '.join(MODEL_SIZES)}")
    width, depth = MODEL_SIZES[size]
    return YOLOv4CSP(num_classes=num_classes, width=width, depth=depth, implicit=implicit)

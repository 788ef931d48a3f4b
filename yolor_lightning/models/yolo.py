"""YOLOv4-CSP: CSPDarknet53 -> CSP-PAN, with one head per task, its named sizes, and its parts
registered as `cspdarknet53` and `csp_pan`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yolor_lightning.models.backbone import CSP_STAGES, CSP_STEM, CSPDarknet53
from yolor_lightning.models.blocks import scale_channels, scale_repeats
from yolor_lightning.models.neck import CSPPAN, NECK_CHANNELS, NECK_REPEATS
from yolor_lightning.models.network import UnifiedNetwork, build_heads
from yolor_lightning.models.registry import BACKBONES, NECKS


@dataclass(frozen=True)
class CSPSize:
    """One YOLOv4-CSP size, layer by layer: the backbone's `stem` (3x3 conv, stride-2 conv) and
    `stages` ((output channels, residual bottlenecks) at strides 4, 8, 16, 32), the neck's
    `neck` widths (P3, P4, P5), `neck_repeats` (plain bottlenecks per CSP stage) and
    `spp_repeats` (pairs of 1x1 and 3x3 convs after SPPCSP's pools)."""

    stem: tuple[int, int] = CSP_STEM
    stages: tuple[tuple[int, int], ...] = CSP_STAGES
    neck: tuple[int, ...] = NECK_CHANNELS
    neck_repeats: int = NECK_REPEATS
    spp_repeats: int = 1


def scaled(width: float, depth: float) -> CSPSize:
    """The full-size model with its channels times `width` (rounded up to multiples of 8) and its
    bottlenecks times `depth` (rounded, at least 1)."""
    return CSPSize(
        stem=(scale_channels(CSP_STEM[0], width), scale_channels(CSP_STEM[1], width)),
        stages=tuple((scale_channels(c, width), scale_repeats(n, depth)) for c, n in CSP_STAGES),
        neck=tuple(scale_channels(c, width) for c in NECK_CHANNELS),
        neck_repeats=scale_repeats(NECK_REPEATS, depth),
    )


MODEL_SIZES: dict[str, CSPSize] = {
    "tiny": scaled(0.1875, 0.33),
    "small": scaled(0.25, 0.33),
    "medium": scaled(0.5, 0.67),
    "full": scaled(1.0, 1.0),  # WongKinYiu/yolor cfg/yolov4_csp.cfg
    # cfg/yolov4_csp_x.cfg: the full size's channels times 1.25, except the 3x3 stem conv's,
    # which keeps 32 (no width multiplier gives 32 and 80); 3, 10, 10, 5 residual and 3 plain
    # bottlenecks (the full size's times 1.3, rounded; 1.33 would give 11 for 8); and two conv
    # pairs after SPPCSP's pools where the others have one
    "x": CSPSize(
        stem=(32, 80),
        stages=((160, 3), (320, 10), (640, 10), (1280, 5)),
        neck=(160, 320, 640),
        neck_repeats=3,
        spp_repeats=2,
    ),
}
"""The named YOLOv4-CSP sizes: tiny, small and medium scale the full-size (official) model by
(width, depth) multipliers; full and x are the official cfgs' layer for layer."""


def csp_size(size: str) -> CSPSize:
    """The layout of a named YOLOv4-CSP size (a key of `MODEL_SIZES`)."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; allowed sizes: {', '.join(MODEL_SIZES)}")
    return MODEL_SIZES[size]


@BACKBONES.register("cspdarknet53", sizes=tuple(MODEL_SIZES))
def cspdarknet53(size: str) -> CSPDarknet53:
    layout = csp_size(size)
    return CSPDarknet53(layout.stem, layout.stages)


@NECKS.register("csp_pan")
def csp_pan(in_channels: tuple[int, ...], size: str) -> CSPPAN:
    layout = csp_size(size)
    return CSPPAN(in_channels, layout.neck, layout.neck_repeats, layout.spp_repeats)


class YOLOv4CSP(UnifiedNetwork):
    """YOLOv4-CSP of a named size (a key of `MODEL_SIZES`) with the anchor head, one head per
    task of `tasks`; `implicit` configures the implicit-knowledge sites (`models.sites`) of every
    branch. (`build_network` builds the same network from a config by part names.)"""

    def __init__(
        self,
        num_classes: int = 80,
        size: str = "full",
        strides: Sequence[int] = (8, 16, 32),
        implicit: Mapping[str, Mapping[str, Any]] | None = None,
        tasks: Sequence[str] = ("det",),
        embedding_dim: int = 128,
    ):
        backbone = cspdarknet53(size)
        if tuple(strides) != backbone.strides:
            raise ValueError(
                f"strides must be the backbone's output strides {backbone.strides}, "
                f"got {tuple(strides)}"
            )
        neck = csp_pan(backbone.out_channels, size)
        heads = build_heads(neck.out_channels, strides, num_classes, tasks, implicit, embedding_dim)
        super().__init__(backbone, neck, heads)
        self.num_classes = num_classes


def build_yolov4_csp(
    size: str,
    num_classes: int,
    implicit: Mapping[str, Mapping[str, Any]] | None = None,
    tasks: Sequence[str] = ("det",),
    embedding_dim: int = 128,
) -> YOLOv4CSP:
    """YOLOv4-CSP of a named size (a key of `MODEL_SIZES`) with a head per task of `tasks` and
    the implicit-knowledge sites of `implicit` (site -> options, e.g.
    `{"fa": {"operator": "add"}, "pr": {"operator": "mul", "prior": "vector"}}`)."""
    return YOLOv4CSP(num_classes, size, implicit=implicit, tasks=tasks, embedding_dim=embedding_dim)

"""YOLOv4-CSP: CSPDarknet53 -> CSP-PAN, with one head per task, its named sizes, and its parts
registered as `cspdarknet53` and `csp_pan`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from yolor_lightning.models.backbone import CSPDarknet53
from yolor_lightning.models.neck import CSPPAN
from yolor_lightning.models.network import UnifiedNetwork, build_heads
from yolor_lightning.models.registry import BACKBONES, NECKS

# name -> (width, depth) multipliers of the full-size (official) YOLOv4-CSP.
MODEL_SIZES: dict[str, tuple[float, float]] = {
    "tiny": (0.1875, 0.33),
    "small": (0.25, 0.33),
    "medium": (0.5, 0.67),
    "full": (1.0, 1.0),
}


def size_multipliers(size: str) -> tuple[float, float]:
    """(width, depth) of a named YOLOv4-CSP size (a key of `MODEL_SIZES`)."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; allowed sizes: {', '.join(MODEL_SIZES)}")
    return MODEL_SIZES[size]


@BACKBONES.register("cspdarknet53", sizes=tuple(MODEL_SIZES))
def cspdarknet53(size: str) -> CSPDarknet53:
    return CSPDarknet53(*size_multipliers(size))


@NECKS.register("csp_pan")
def csp_pan(in_channels: tuple[int, ...], size: str) -> CSPPAN:
    return CSPPAN(in_channels, *size_multipliers(size))


class YOLOv4CSP(UnifiedNetwork):
    """YOLOv4-CSP at any width / depth multipliers with the anchor head, one head per task of
    `tasks`; `implicit` configures the implicit-knowledge sites (`models.sites`) of every branch.
    (`build_network` builds the same network from a config by part names.)"""

    def __init__(
        self,
        num_classes: int = 80,
        width: float = 1.0,
        depth: float = 1.0,
        strides: Sequence[int] = (8, 16, 32),
        implicit: Mapping[str, Mapping[str, Any]] | None = None,
        tasks: Sequence[str] = ("det",),
        embedding_dim: int = 128,
    ):
        backbone = CSPDarknet53(width, depth)
        if tuple(strides) != backbone.strides:
            raise ValueError(
                f"strides must be the backbone's output strides {backbone.strides}, "
                f"got {tuple(strides)}"
            )
        neck = CSPPAN(backbone.out_channels, width, depth)
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
    width, depth = size_multipliers(size)
    return YOLOv4CSP(
        num_classes, width, depth, implicit=implicit, tasks=tasks, embedding_dim=embedding_dim
    )

"""YOLOv4-CSP as the unified network: CSPDarknet53 -> CSP-PAN (the shared explicit features)
-> one head per task (anchor-based detection, multi-label classification, embeddings), and its
named sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from yolor_lightning.models.backbone import CSPDarknet53
from yolor_lightning.models.head import Anchors, DetectionHead
from yolor_lightning.models.neck import CSPPAN
from yolor_lightning.models.sites import enabled_sites, sites_of
from yolor_lightning.models.task_heads import ClassificationHead, EmbeddingHead

TASKS: tuple[str, ...] = ("det", "cls", "emb")
"""The tasks a network can have a head for: detection, multi-label classification, embedding."""

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
    """YOLOv4-CSP with one head per task of `tasks` on the shared neck features.

    `forward` returns `{task: output}`: `det` the detection head's raw per-level logits
    `[B, A, H/s, W/s, 5 + nc]` (`heads["det"].decode` turns them into boxes), `cls` the image's
    class logits `[B, nc]`, `emb` per-level embedding maps `[B, embedding_dim, H/s, W/s]`.
    `implicit` configures the implicit-knowledge sites (`models.sites`) of every branch.
    """

    def __init__(
        self,
        num_classes: int = 80,
        width: float = 1.0,
        depth: float = 1.0,
        anchors: Anchors = DEFAULT_ANCHORS,
        strides: Sequence[int] = (8, 16, 32),
        implicit: Mapping[str, Mapping[str, Any]] | None = None,
        tasks: Sequence[str] = ("det",),
        embedding_dim: int = 128,
    ):
        super().__init__()
        unknown = [task for task in tasks if task not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks={list(tasks)} is invalid: a non-empty subset of {TASKS}")
        sites = enabled_sites(implicit, tasks)
        self.backbone = CSPDarknet53(width, depth)
        if tuple(strides) != self.backbone.strides:
            raise ValueError(
                f"strides must be the backbone's output strides {self.backbone.strides}, "
                f"got {tuple(strides)}"
            )
        self.neck = CSPPAN(self.backbone.out_channels, width, depth)
        channels = self.neck.out_channels
        self.heads = nn.ModuleDict()
        if "det" in tasks:
            self.heads["det"] = DetectionHead(
                channels, num_classes, anchors, strides, sites_of("det", sites)
            )
        if "cls" in tasks:
            self.heads["cls"] = ClassificationHead(channels, num_classes, sites.get("task_cls"))
        if "emb" in tasks:
            self.heads["emb"] = EmbeddingHead(channels, embedding_dim, sites.get("task_emb"))
        self.num_classes = num_classes

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        features = self.neck(self.backbone(images))
        return {task: head(features) for task, head in self.heads.items()}


def output_tensors(outputs: torch.Tensor | Sequence | Mapping) -> list[torch.Tensor]:
    """The tensors of a network output (a tensor, a list of them or a dict of task outputs) in
    order: what comparisons of two networks' outputs iterate over."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    values = outputs.values() if isinstance(outputs, Mapping) else outputs
    return [tensor for value in values for tensor in output_tensors(value)]


def build_yolov4_csp(
    size: str,
    num_classes: int,
    implicit: Mapping[str, Mapping[str, Any]] | None = None,
    tasks: Sequence[str] = ("det",),
    embedding_dim: int = 128,
) -> YOLOv4CSP:
    """YOLOv4-CSP of a named size (a key of `MODEL_SIZES`) with default anchors and strides, a
    head per task of `tasks`, and the implicit-knowledge sites of `implicit` (site -> options,
    e.g. `{"fa": {"operator": "add"}, "pr": {"operator": "mul", "prior": "vector"}}`)."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; allowed sizes: {', '.join(MODEL_SIZES)}")
    width, depth = MODEL_SIZES[size]
    return YOLOv4CSP(
        num_classes=num_classes,
        width=width,
        depth=depth,
        implicit=implicit,
        tasks=tasks,
        embedding_dim=embedding_dim,
    )

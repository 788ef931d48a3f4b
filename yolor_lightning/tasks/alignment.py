"""The task-aligned assigner (TAL, Feng et al., TOOD 2021) of YOLOv9's anchor-free head.

For every ground truth, the anchor points whose centre lies inside its box are candidates; each
candidate is scored by the alignment metric `t = s^alpha * IoU^beta`, with `s` the predicted
probability of the ground truth's class and IoU that of the predicted box with the ground truth
(CIoU clamped at 0, as the official code); the `topk` candidates with the highest `t` are
positives. An anchor point positive for several ground truths keeps the one it overlaps most.
A positive's class target is `t` normalised per ground truth so that its best anchor point gets
the ground truth's best IoU (soft targets); every other anchor point is background.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_convert

from yolor_lightning.tasks.box_iou import complete_iou

EPS = 1e-9


class GroundTruth(NamedTuple):
    """A batch's ground truths padded to the image with the most: `labels` `[B, M]` (long),
    `boxes` `[B, M, 4]` xyxy pixels, `valid` `[B, M]` (bool: a real box, not padding), `index`
    `[B, M]` each box's position in the batch's boxes taken image after image."""

    labels: Tensor
    boxes: Tensor
    valid: Tensor
    index: Tensor


class Assignment(NamedTuple):
    """Per anchor point (`[B, N]`): `foreground` (bool), the assigned ground truth's `labels`,
    `boxes` (`[B, N, 4]` xyxy pixels) and `target` (its `GroundTruth.index`, -1 for background),
    and the soft class `scores` `[B, N, nc]` (zero on background)."""

    foreground: Tensor
    labels: Tensor
    boxes: Tensor
    target: Tensor
    scores: Tensor


class AssignedCells(NamedTuple):
    """The positives of one level as cells: image, row, column and ground-truth index (the
    read-out of the emb task, `tasks.embedding.object_embeddings`)."""

    image: Tensor
    gy: Tensor
    gx: Tensor
    target: Tensor


def assigned_cells(
    assigned: Assignment, grid_shapes: Sequence[tuple[int, int]]
) -> list[AssignedCells]:
    """The foreground anchor points of `assigned` per level of `grid_shapes` (rows, columns;
    the points run over levels, then rows, then columns)."""
    cells, start = [], 0
    for height, width in grid_shapes:
        level = assigned.foreground[:, start : start + height * width]
        image, index = level.nonzero(as_tuple=True)
        target = assigned.target[:, start : start + height * width][image, index]
        cells.append(AssignedCells(image, index // width, index % width, target))
        start += height * width
    return cells


def pad_ground_truth(targets: Sequence[dict[str, Tensor]], device: torch.device) -> GroundTruth:
    """Per-image `{"boxes": xyxy pixels, "labels"}` dicts padded into one `GroundTruth`."""
    most = max((len(t["labels"]) for t in targets), default=0)
    batch = len(targets)
    labels = torch.zeros(batch, most, dtype=torch.long, device=device)
    boxes = torch.zeros(batch, most, 4, device=device)
    valid = torch.zeros(batch, most, dtype=torch.bool, device=device)
    index = torch.full((batch, most), -1, dtype=torch.long, device=device)
    offset = 0
    for image, target in enumerate(targets):
        count = len(target["labels"])
        labels[image, :count] = target["labels"].to(device)
        boxes[image, :count] = target["boxes"].to(device=device, dtype=torch.float32).view(-1, 4)
        valid[image, :count] = True
        index[image, :count] = torch.arange(offset, offset + count, device=device)
        offset += count
    return GroundTruth(labels, boxes, valid, index)


class TaskAlignedAssigner:
    """`assign(scores, boxes, points, truth)`: the `Assignment` of anchor points to ground truths
    (YOLOv9's settings: `topk` 10, `alpha` 0.5, `beta` 6.0)."""

    def __init__(self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0):
        self.num_classes = num_classes
        self.topk = topk
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def assign(
        self, scores: Tensor, boxes: Tensor, points: Tensor, truth: GroundTruth
    ) -> Assignment:
        """`scores` `[B, N, nc]` predicted probabilities, `boxes` `[B, N, 4]` predicted xyxy and
        `points` `[N, 2]` anchor points, both in pixels."""
        batch, count = scores.shape[:2]
        if truth.labels.shape[1] == 0:
            return Assignment(
                torch.zeros(batch, count, dtype=torch.bool, device=scores.device),
                torch.zeros(batch, count, dtype=torch.long, device=scores.device),
                torch.zeros(batch, count, 4, device=scores.device),
                torch.full((batch, count), -1, dtype=torch.long, device=scores.device),
                torch.zeros_like(scores),
            )
        inside = self._inside(points, truth)  # [B, M, N]
        class_scores = scores.gather(2, truth.labels.unsqueeze(1).expand(-1, count, -1))
        overlaps = complete_iou(
            box_convert(truth.boxes, "xyxy", "cxcywh").unsqueeze(2),
            box_convert(boxes.float(), "xyxy", "cxcywh").unsqueeze(1),
        ).clamp(min=0)  # [B, M, N]
        metric = class_scores.transpose(1, 2).pow(self.alpha) * overlaps.pow(self.beta)
        positive = self._top_candidates(metric * inside) & inside & truth.valid.unsqueeze(-1)
        positive = self._one_truth_per_point(positive, overlaps)
        foreground = positive.any(1)  # [B, N]
        chosen = positive.float().argmax(1)  # [B, N]: the ground truth of each point
        labels = truth.labels.gather(1, chosen)
        assigned_boxes = truth.boxes.gather(1, chosen.unsqueeze(-1).expand(-1, -1, 4))
        target = torch.where(foreground, truth.index.gather(1, chosen), -1)
        metric = metric * positive
        best_metric = metric.amax(-1, keepdim=True)  # [B, M, 1]
        best_overlap = (overlaps * positive).amax(-1, keepdim=True)
        normalised = (metric * best_overlap / (best_metric + EPS)).amax(1)  # [B, N]
        soft = torch.zeros_like(scores)
        soft.scatter_(2, labels.unsqueeze(-1), normalised.unsqueeze(-1))
        soft = soft * foreground.unsqueeze(-1)
        return Assignment(foreground, labels, assigned_boxes, target, soft)

    @staticmethod
    def _inside(points: Tensor, truth: GroundTruth) -> Tensor:
        """`[B, M, N]`: anchor point strictly inside the ground truth's box."""
        left_top, right_bottom = truth.boxes.unsqueeze(2).chunk(2, -1)  # [B, M, 1, 2]
        distances = torch.cat((points - left_top, right_bottom - points), -1)
        return distances.amin(-1) > EPS

    def _top_candidates(self, metric: Tensor) -> Tensor:
        """`[B, M, N]`: the `topk` anchor points of highest metric per ground truth."""
        k = min(self.topk, metric.shape[-1])
        indices = metric.topk(k, dim=-1).indices
        return torch.zeros_like(metric, dtype=torch.bool).scatter_(-1, indices, True)

    @staticmethod
    def _one_truth_per_point(positive: Tensor, overlaps: Tensor) -> Tensor:
        """A point positive for several ground truths keeps only the one of highest IoU."""
        shared = positive.sum(1, keepdim=True) > 1  # [B, 1, N]
        best = torch.zeros_like(positive).scatter_(1, overlaps.argmax(1, keepdim=True), True)
        return torch.where(shared, best, positive)

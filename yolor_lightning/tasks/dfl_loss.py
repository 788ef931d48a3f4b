"""Loss of YOLOv9's anchor-free head (`models.dfl_head`): the task-aligned assignment, BCE
classification against its soft targets, `1 - CIoU` and distribution focal loss on the
positives, with YOLOv9's gains (box 7.5, cls 0.5, dfl 1.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from yolor_lightning.models.dfl_head import (
    REG_MAX,
    boxes_to_distances,
    distances_to_boxes,
    expected_distances,
    flatten_levels,
)
from yolor_lightning.tasks.alignment import Assignment, TaskAlignedAssigner, pad_ground_truth
from yolor_lightning.tasks.box_iou import complete_iou


def distribution_focal_loss(logits: Tensor, distances: Tensor) -> Tensor:
    """DFL (Li et al., Generalized Focal Loss 2020): for a target distance `d` between bins
    `i = floor(d)` and `i + 1`, the cross-entropies of the bins' softmax at `i` and `i + 1`
    weighted by `i + 1 - d` and `d - i`, averaged over the four sides.

    `logits` `[n, 4, reg_max]`, `distances` `[n, 4]` in bins, below `reg_max - 1`. Returns `[n]`.
    """
    left = distances.long()
    weight_left = left + 1 - distances
    log_probs = logits.float().log_softmax(-1)
    loss_left = -log_probs.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    loss_right = -log_probs.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    return (loss_left * weight_left + loss_right * (1 - weight_left)).mean(-1)


class DFLLoss(nn.Module):
    """`forward(raw, targets)` of the DFL head's raw outputs and per-image targets
    (`{"boxes": xyxy pixels, "labels"}`): `batch_size * (box + cls + dfl)` (as `YoloLoss`, the
    per-image loss scaled by the batch size) and the gain-weighted parts, detached.

    Each part is normalised by the sum of the soft class targets, and box and dfl terms of a
    positive are weighted by its soft target, as the official `ComputeLoss`.
    """

    def __init__(
        self,
        strides: Sequence[int],
        num_classes: int,
        reg_max: int = REG_MAX,
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ):
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.gains = {"box": box_gain, "cls": cls_gain, "dfl": dfl_gain}
        self.assigner = TaskAlignedAssigner(num_classes, topk, alpha, beta)

    def _predictions(self, raw: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Box logits, class logits, predicted xyxy boxes (grid units), anchor points (grid
        units) and their strides, all levels flattened."""
        box_logits, cls_logits, points, strides = flatten_levels(
            [level.float() for level in raw], self.reg_max, self.num_classes, self.strides
        )
        bins = torch.arange(self.reg_max, device=box_logits.device, dtype=torch.float32)
        boxes = distances_to_boxes(expected_distances(box_logits, bins), points)
        return box_logits, cls_logits, boxes, points, strides

    def assign(self, raw: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]) -> Assignment:
        """The task-aligned assignment of the anchor points of `raw` to the ground truths."""
        _, cls_logits, boxes, points, strides = self._predictions(raw)
        truth = pad_ground_truth(targets, cls_logits.device)
        return self.assigner.assign(
            cls_logits.detach().sigmoid(), boxes.detach() * strides, points * strides, truth
        )

    def forward(
        self,
        raw: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]],
        assigned: Assignment | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`assigned`: `self.assign(raw, targets)` when the caller already has it."""
        if assigned is None:
            assigned = self.assign(raw, targets)
        box_logits, cls_logits, boxes, points, strides = self._predictions(raw)
        normaliser = assigned.scores.sum().clamp(min=1)
        cls = F.binary_cross_entropy_with_logits(cls_logits, assigned.scores, reduction="sum")
        box = dfl = cls_logits.new_zeros(())
        foreground = assigned.foreground
        if foreground.any():
            weight = assigned.scores.sum(-1)[foreground]
            target_boxes = (assigned.boxes / strides)[foreground]  # grid units
            iou = complete_iou(
                box_convert(boxes[foreground], "xyxy", "cxcywh"),
                box_convert(target_boxes, "xyxy", "cxcywh"),
            )
            box = ((1 - iou) * weight).sum() / normaliser
            positive_points = points.expand_as(boxes[..., :2])[foreground]
            distances = boxes_to_distances(target_boxes, positive_points)
            distances = distances.clamp(0, self.reg_max - 1.01)
            logits = box_logits[foreground].unflatten(-1, (4, self.reg_max))
            dfl = (distribution_focal_loss(logits, distances) * weight).sum() / normaliser
        parts = {
            "box": self.gains["box"] * box,
            "cls": self.gains["cls"] * cls / normaliser,
            "dfl": self.gains["dfl"] * dfl,
        }
        total = raw[0].shape[0] * sum(parts.values())
        return total, {name: value.detach() for name, value in parts.items()}

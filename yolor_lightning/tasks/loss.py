"""Loss of the YOLOv4-CSP / YOLOR detection head: CIoU box + IoU-target objectness + class BCE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolor_lightning.tasks.box_iou import complete_iou
from yolor_lightning.tasks.targets import LevelTargets, assign_targets


class YoloLoss(nn.Module):
    """Detection loss of the official YOLOR / ScaledYOLOv4 code.

    Per level, at the assigned anchors and cells (see `assign_targets`):

    - box: mean of `1 - CIoU(predicted box, target box)`;
    - objectness: BCE over all cells, the target being the detached CIoU clamped at 0 on assigned
      cells and 0 elsewhere, weighted by `level_weights` (4, 1, 0.4 for P3..P5);
    - class: BCE against one-hot labels (smoothed to `1 - eps/2`, `eps/2`, YOLOR's `smooth_BCE`
      with `eps = label_smoothing`); skipped when `num_classes == 1`, as in the official code.

    With `fl_gamma > 0` the objectness and class BCE become focal losses
    (:func:`focal_bce_with_logits`, YOLOR's `FocalLoss` around `BCEWithLogitsLoss`);
    `fl_gamma = 0` (the default) is the plain BCE.

    The gains are the COCO-tuned ones rescaled as YOLOR's training code does: `box_gain * 3/L`,
    `obj_gain * 3/L`, `cls_gain * nc/80 * 3/L`, with L levels (no image-size term: YOLOv5/v7
    also scale objectness by `(image_size/640)^2`, which starves objectness at small sizes).
    `forward` returns `batch_size * (box + obj + cls)`, i.e. the loss scaled by the batch size as
    the official code does (the per-image mean of the parts summed over the batch), and the
    gain-weighted parts (not batch-scaled) detached for logging.
    """

    def __init__(
        self,
        anchors: Tensor,
        strides: Sequence[int],
        num_classes: int,
        box_gain: float = 0.05,
        obj_gain: float = 1.0,
        cls_gain: float = 0.5,
        anchor_threshold: float = 4.0,
        level_weights: Sequence[float] = (4.0, 1.0, 0.4),
        label_smoothing: float = 0.0,
        fl_gamma: float = 0.0,
        fl_alpha: float = 0.25,
    ):
        super().__init__()
        num_levels = len(strides)
        if len(level_weights) != num_levels:
            raise ValueError(
                f"level_weights needs one weight per level ({num_levels}), got {len(level_weights)}"
            )
        self.register_buffer("anchors", anchors.detach().clone().float())
        self.strides = tuple(int(s) for s in strides)
        self.num_classes = num_classes
        self.anchor_threshold = anchor_threshold
        self.level_weights = tuple(level_weights)
        level_scale = 3 / num_levels
        self.box_gain = box_gain * level_scale
        self.obj_gain = obj_gain * level_scale
        self.cls_gain = cls_gain * num_classes / 80 * level_scale
        self.positive_label = 1.0 - 0.5 * label_smoothing
        self.negative_label = 0.5 * label_smoothing
        self.fl_gamma = fl_gamma
        self.fl_alpha = fl_alpha

    def assign(
        self, raw: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> list[LevelTargets]:
        """The anchors and cells of `raw`'s grids that each ground truth is assigned to."""
        return assign_targets(
            targets,
            self.anchors,
            self.strides,
            [tuple(pred.shape[2:4]) for pred in raw],
            self.anchor_threshold,
        )

    def forward(
        self,
        raw: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]],
        assigned: Sequence[LevelTargets] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`assigned`: `self.assign(raw, targets)` when the caller already has it."""
        if assigned is None:
            assigned = self.assign(raw, targets)
        zero = raw[0].new_zeros((), dtype=torch.float32)
        box_loss, obj_loss, cls_loss = zero, zero, zero
        for pred, level, weight in zip(raw, assigned, self.level_weights, strict=True):
            pred = pred.float()
            obj_target = torch.zeros_like(pred[..., 4])
            if level.image.numel():
                matched = pred[level.image, level.anchor, level.gy, level.gx]
                ciou_loss = self._box_loss(matched, level)
                box_loss = box_loss + ciou_loss.mean()
                obj_target[level.image, level.anchor, level.gy, level.gx] = (
                    (1.0 - ciou_loss).detach().clamp(min=0)
                )
                if self.num_classes > 1:
                    targets = self.class_targets(level.labels)
                    cls_loss = cls_loss + self._bce(matched[:, 5:], targets)
            obj_loss = obj_loss + weight * self._bce(pred[..., 4], obj_target)
        parts = {
            "box": self.box_gain * box_loss,
            "obj": self.obj_gain * obj_loss,
            "cls": self.cls_gain * cls_loss,
        }
        total = raw[0].shape[0] * (parts["box"] + parts["obj"] + parts["cls"])
        return total, {name: value.detach() for name, value in parts.items()}

    @staticmethod
    def _box_loss(matched: Tensor, level: LevelTargets) -> Tensor:
        """`1 - CIoU` of the decoded predictions (grid units, relative to their cell)."""
        prob = matched[:, :4].sigmoid()
        predicted = torch.cat((prob[:, :2] * 2 - 0.5, (prob[:, 2:4] * 2) ** 2 * level.anchors), 1)
        return 1 - complete_iou(predicted, level.boxes)

    def class_targets(self, labels: Tensor) -> Tensor:
        """The class targets of `labels` `[n]`: `[n, num_classes]`, `1 - eps/2` at the label and
        `eps/2` elsewhere (`eps = label_smoothing`; one-hot at 0)."""
        shape = (len(labels), self.num_classes)
        target = torch.full(shape, self.negative_label, device=labels.device)
        target[torch.arange(len(labels), device=labels.device), labels] = self.positive_label
        return target

    def _bce(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean BCE of the objectness or class logits, focal with `fl_gamma > 0`."""
        if self.fl_gamma == 0:
            return F.binary_cross_entropy_with_logits(logits, target)
        return focal_bce_with_logits(logits, target, self.fl_gamma, self.fl_alpha)


def focal_bce_with_logits(logits: Tensor, target: Tensor, gamma: float, alpha: float) -> Tensor:
    """Focal loss (Lin et al. 2017) around the BCE of `logits`, mean over the elements.

    Each element's BCE is weighted by `alpha_t * (1 - p_t) ** gamma`, where `p = sigmoid(logit)`,
    `p_t = t·p + (1 - t)(1 - p)` and `alpha_t = t·alpha + (1 - t)(1 - alpha)` for the target `t`
    (which may be soft: an IoU, a smoothed label). The same numbers as YOLOR's `FocalLoss`
    around `BCEWithLogitsLoss` and as `torchvision.ops.sigmoid_focal_loss(reduction="mean")`.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    probability = logits.sigmoid()
    p_t = target * probability + (1 - target) * (1 - probability)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    return (bce * alpha_t * (1 - p_t) ** gamma).mean()

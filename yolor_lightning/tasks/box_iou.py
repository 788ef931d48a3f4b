"""Complete IoU (CIoU, Zheng et al., 2020) of predicted and target boxes, as the YOLOR loss uses
it, finite for every box an early network can predict."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def complete_iou(boxes: Tensor, targets: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU of pairs of `[n, 4]` (cx, cy, w, h) boxes:
    `IoU - centre distance^2 / enclosing diagonal^2 - alpha v`, with the aspect-ratio term
    `v = 4/pi^2 (atan(w_t / (h_t + eps)) - atan(w / (h + eps)))^2` as in YOLOR's `bbox_iou`.

    Why not torchvision's `complete_box_iou_loss`: it recomputes widths and heights from xyxy
    corners and takes `atan(w / h)` without eps. A predicted box whose size is below the float32
    resolution of its centre (`(2 sigmoid(t))^2 * anchor` under ~1e-7 grid cells, i.e. w and h
    logits under about -9, as an early network can give) has `x2 - x1 == y2 - y1 == 0`
    there, and `atan(0 / 0)` is NaN: a NaN box loss, and through the IoU objectness target a
    NaN objectness loss. Here the sizes are used as given and the heights carry the eps.
    """
    (x, y, w, h), (xt, yt, wt, ht) = boxes.unbind(-1), targets.unbind(-1)
    left, right = torch.max(x - w / 2, xt - wt / 2), torch.min(x + w / 2, xt + wt / 2)
    top, bottom = torch.max(y - h / 2, yt - ht / 2), torch.min(y + h / 2, yt + ht / 2)
    intersection = (right - left).clamp(min=0) * (bottom - top).clamp(min=0)
    iou = intersection / (w * h + wt * ht - intersection + eps)
    enclosing_w = torch.max(x + w / 2, xt + wt / 2) - torch.min(x - w / 2, xt - wt / 2)
    enclosing_h = torch.max(y + h / 2, yt + ht / 2) - torch.min(y - h / 2, yt - ht / 2)
    diagonal = enclosing_w**2 + enclosing_h**2 + eps
    centre_distance = (x - xt) ** 2 + (y - yt) ** 2
    v = (4 / math.pi**2) * (torch.atan(wt / (ht + eps)) - torch.atan(w / (h + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + 1 + eps)
    return iou - centre_distance / diagonal - alpha * v

"""Target assignment of the YOLOv4/YOLOR anchor-based head.

A ground-truth box is matched, on every level, to each anchor whose width and height are both
within a factor `anchor_threshold` of the box's (max(r, 1/r) < threshold over w and h). Each
match is placed in the cell holding the box centre and in the two neighbouring cells closest to
the centre (left or right, up or down: the neighbour across the nearer cell edge, when that
neighbour is inside the grid), since the decoded centre `2 sigmoid - 0.5` spans -0.5..1.5 cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

# Half-cell shifts of the centre: own cell, then towards left, up, right, down neighbours.
_CELL_SHIFTS = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]])


class LevelTargets(NamedTuple):
    """Assigned targets of one level, one row per (ground truth, anchor, cell) match.

    `boxes` are (x, y, w, h) in grid units, x/y relative to the cell's top-left corner (so in
    -0.5..1.5); `anchors` are the matched anchors' (w, h) in grid units; `target` is the matched
    ground truth's index in the batch's boxes taken image after image (`flatten_targets` order).
    """

    image: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor
    boxes: Tensor
    labels: Tensor
    anchors: Tensor
    target: Tensor


def flatten_targets(targets: Sequence[dict[str, Tensor]], device: torch.device) -> Tensor:
    """Per-image `{"boxes": xyxy pixels, "labels"}` dicts to one `[n, 6]` tensor of
    (image index, label, cx, cy, w, h) in pixels."""
    rows = []
    for index, target in enumerate(targets):
        boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
        labels = target["labels"].to(device=device, dtype=torch.float32).reshape(-1, 1)
        image = torch.full_like(labels, float(index))
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        size = boxes[:, 2:] - boxes[:, :2]
        rows.append(torch.cat((image, labels, centre, size), dim=1))
    if not rows:
        return torch.zeros(0, 6, device=device)
    return torch.cat(rows)


def assign_targets(
    targets: Sequence[dict[str, Tensor]],
    anchors: Tensor,
    strides: Sequence[int],
    grid_shapes: Sequence[tuple[int, int]],
    anchor_threshold: float = 4.0,
) -> list[LevelTargets]:
    """Match ground truths to anchors and cells of every level.

    Args:
        targets: one dict per image, `boxes` float `[n, 4]` xyxy in input pixels, `labels` `[n]`.
        anchors: `[L, A, 2]` anchor (w, h) in input pixels.
        strides: stride of each level.
        grid_shapes: (height, width) of each level's grid.
        anchor_threshold: largest allowed w or h ratio between a box and an anchor.
    """
    device = anchors.device
    gt = flatten_targets(targets, device)
    shifts = _CELL_SHIFTS.to(device)
    assigned = []
    for level, (stride, (height, width)) in enumerate(zip(strides, grid_shapes, strict=True)):
        anchor_wh = anchors[level].float() / stride
        gt_xy, gt_wh = gt[:, 2:4] / stride, gt[:, 4:6] / stride
        ratio = gt_wh[None] / anchor_wh[:, None]  # [A, n, 2]
        matched = torch.max(ratio, 1 / ratio).amax(dim=2) < anchor_threshold
        anchor_index, gt_index = matched.nonzero(as_tuple=True)
        xy = gt_xy[gt_index]
        grid_size = torch.tensor([width, height], device=device)
        # YOLOR's rule (ScaledYOLOv4's loss): a centre exactly on a grid line (fraction 0) takes
        # the left / top neighbour only; YOLOv5's mirrored test `(W - xy) % 1 < 0.5` would also
        # take its own cell a second time as the "right / bottom neighbour".
        near_low = (xy % 1 < 0.5) & (xy > 1)  # near the left / top edge, neighbour exists
        near_high = (xy % 1 > 0.5) & (xy < grid_size - 1)
        use_shift = torch.stack(
            (torch.ones_like(near_low[:, 0]), *near_low.T, *near_high.T)
        )  # [5, m]
        shift_index, match_index = use_shift.nonzero(as_tuple=True)
        xy = xy[match_index]
        cell = (xy - shifts[shift_index]).floor()
        cell[:, 0].clamp_(0, width - 1)
        cell[:, 1].clamp_(0, height - 1)
        chosen_gt = gt_index[match_index]
        chosen_anchor = anchor_index[match_index]
        assigned.append(
            LevelTargets(
                image=gt[chosen_gt, 0].long(),
                anchor=chosen_anchor,
                gy=cell[:, 1].long(),
                gx=cell[:, 0].long(),
                boxes=torch.cat((xy - cell, gt_wh[chosen_gt]), dim=1),
                labels=gt[chosen_gt, 1].long(),
                anchors=anchor_wh[chosen_anchor],
                target=chosen_gt,
            )
        )
    return assigned

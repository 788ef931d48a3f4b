"""Complete IoU on hand-built boxes: the known values, torchvision's on ordinary boxes, and
finite values and gradients on boxes collapsed to a point."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_convert, complete_box_iou_loss

from yolor_lightning.tasks.box_iou import complete_iou


def test_identical_boxes_have_complete_iou_one() -> None:
    boxes = torch.tensor([[1.0, 0.5, 2.0, 3.0], [0.2, 0.7, 0.5, 0.25]])
    torch.testing.assert_close(complete_iou(boxes, boxes), torch.ones(2))


def test_complete_iou_equals_torchvision_on_ordinary_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes = torch.cat((torch.rand(500, 2, generator=generator) * 2 - 0.5,
                       torch.rand(500, 2, generator=generator) * 4 + 0.05), 1)  # fmt: skip
    targets = torch.cat((torch.rand(500, 2, generator=generator),
                         torch.rand(500, 2, generator=generator) * 4 + 0.05), 1)  # fmt: skip
    reference = complete_box_iou_loss(
        box_convert(boxes, "cxcywh", "xyxy"),
        box_convert(targets, "cxcywh", "xyxy"),
        reduction="none",
    )
    torch.testing.assert_close(1 - complete_iou(boxes, targets), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [0.0, 1e-12])
def test_box_collapsed_to_a_point_has_finite_complete_iou_and_gradient(size: float) -> None:
    """A point at the target's centre: IoU 0, no centre distance, v = 4/pi^2 atan(2)^2 for a
    2x1 target, alpha = v / (1 + v). torchvision gives NaN (atan(0 / 0)) for both sizes: 1e-12
    is lost next to the centre 1.0 when it recomputes w and h from the corners."""
    box = torch.tensor([[1.0, 1.0, size, size]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 2.0, 1.0]])
    v = 4 / math.pi**2 * math.atan(2.0) ** 2
    value = complete_iou(box, target)
    assert value.item() == pytest.approx(-v * v / (1 + v), rel=1e-4)
    value.sum().backward()
    assert torch.isfinite(box.grad).all()
    torchvision_value = complete_box_iou_loss(
        box_convert(box.detach(), "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")
    )
    assert torchvision_value.isnan().all()

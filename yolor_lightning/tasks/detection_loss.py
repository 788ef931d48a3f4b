"""The loss of a det head: the anchor head's `YoloLoss` or the dfl head's `DFLLoss`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from yolor_lightning.models.dfl_head import DFLHead
from yolor_lightning.tasks.dfl_loss import DFLLoss
from yolor_lightning.tasks.loss import YoloLoss


def detection_loss_for(head: nn.Module, num_classes: int, settings: Mapping[str, Any]) -> nn.Module:
    """The loss that trains `head`; `settings`: `task.loss` without `sparsity_gain` and
    `auxiliary_gain` (the anchor loss's keys, and `dfl`: the dfl loss's)."""
    anchor_settings = dict(settings)
    dfl_settings = anchor_settings.pop("dfl", {})
    if isinstance(head, DFLHead):
        return DFLLoss(head.strides, num_classes, head.reg_max, **dfl_settings)
    return YoloLoss(
        anchors=head.anchors, strides=head.strides, num_classes=num_classes, **anchor_settings
    )

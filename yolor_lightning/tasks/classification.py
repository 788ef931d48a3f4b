"""Multi-label image classification (`cls`): which categories an image contains."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score


def multilabel_loss(logits: Tensor, image_labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean BCE of class logits `[B, nc]` against multi-hot labels, smoothed to `1 - eps/2` and
    `eps/2` (as the detection class loss does)."""
    target = image_labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def multilabel_metrics(num_classes: int) -> MetricCollection:
    """Macro multi-label average precision (`mAP`) and F1 at probability 0.5 (`F1`)."""
    return MetricCollection(
        {
            "mAP": MultilabelAveragePrecision(num_labels=num_classes, average="macro"),
            "F1": MultilabelF1Score(num_labels=num_classes, average="macro"),
        }
    )

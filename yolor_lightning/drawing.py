"""Boxes drawn on images (``torchvision.utils.draw_bounding_boxes``), one look for predict's
images and the validation panel of the loggers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.utils import draw_bounding_boxes

# Box colours by label, cycled (matplotlib's tab10).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
PALETTE += ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str],
    scores: torch.Tensor | None = None,
    color: str | None = None,
) -> torch.Tensor:
    """``image`` (uint8 [3, H, W]) with each xyxy box and its class name (and score) drawn, in
    its class's colour, or in ``color`` for all."""
    if not len(boxes):  # torchvision warns on an empty draw
        return image
    labels_list = labels.tolist()
    texts = [names[label] for label in labels_list]
    if scores is not None:
        texts = [f"{text} {score:.2f}" for text, score in zip(texts, scores.tolist(), strict=True)]
    return draw_bounding_boxes(
        image,
        boxes.float(),
        labels=texts,
        colors=[color or PALETTE[label % len(PALETTE)] for label in labels_list],
        width=2,
    )

"""non_max_suppression on hand-built predictions, and against torchvision's NMS per class."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torchvision.ops import box_convert, nms

from yolor_lightning.tasks.postprocess import non_max_suppression


def predictions(rows: list[tuple[float, ...]]) -> Tensor:
    """One image of rows (cx, cy, w, h, objectness, class probabilities...)."""
    return torch.tensor([rows], dtype=torch.float32)


def test_overlapping_boxes_of_one_class_keep_the_best() -> None:
    (result,) = non_max_suppression(
        predictions([(50, 50, 40, 40, 0.9, 0.9), (52, 50, 40, 40, 0.8, 0.9)]), multi_label=False
    )
    assert result["boxes"].tolist() == [[30.0, 30.0, 70.0, 70.0]]
    assert result["scores"].tolist() == pytest.approx([0.81])
    assert result["labels"].tolist() == [0]
    assert result["labels"].dtype == torch.int64


def test_overlapping_boxes_of_different_classes_are_both_kept() -> None:
    (result,) = non_max_suppression(
        predictions([(50, 50, 40, 40, 0.9, 0.9, 0.1), (52, 50, 40, 40, 0.8, 0.1, 0.9)]),
        multi_label=False,
    )
    assert result["labels"].tolist() == [0, 1]


def test_scores_below_the_confidence_threshold_are_dropped() -> None:
    rows = [(50, 50, 40, 40, 0.9, 0.5), (150, 50, 40, 40, 0.5, 0.5), (250, 50, 40, 40, 0.1, 0.9)]
    (result,) = non_max_suppression(predictions(rows), conf_threshold=0.2)
    assert result["scores"].tolist() == pytest.approx([0.45, 0.25])


def test_at_most_max_detections_are_kept_by_score() -> None:
    rows = [(100.0 * i, 50, 40, 40, 0.1 * i, 1.0) for i in range(1, 8)]
    (result,) = non_max_suppression(predictions(rows), max_detections=3)
    assert result["scores"].tolist() == pytest.approx([0.7, 0.6, 0.5])


def test_only_the_best_candidates_enter_nms() -> None:
    rows = [(100.0 * i, 50, 40, 40, 0.1 * i, 1.0) for i in range(1, 8)]
    (result,) = non_max_suppression(predictions(rows), max_candidates=2)
    assert result["scores"].tolist() == pytest.approx([0.7, 0.6])


def test_multi_label_keeps_one_detection_per_class_above_threshold() -> None:
    row = (50, 50, 40, 40, 1.0, 0.6, 0.3, 0.0005)
    (multi,) = non_max_suppression(predictions([row]), multi_label=True)
    (single,) = non_max_suppression(predictions([row]), multi_label=False)
    assert multi["labels"].tolist() == [0, 1]
    assert torch.equal(multi["boxes"][0], multi["boxes"][1])
    assert single["labels"].tolist() == [0]


def test_images_without_candidates_give_empty_detections() -> None:
    batch = torch.zeros(2, 4, 7)
    batch[1, :, :4] = torch.tensor([50.0, 50.0, 40.0, 40.0])
    for result in non_max_suppression(batch):
        assert result["boxes"].shape == (0, 4)
        assert result["scores"].shape == (0,)
        assert result["labels"].shape == (0,)


@pytest.mark.parametrize("threads", [1, 2])
def test_matches_torchvision_nms_run_class_by_class(threads: int) -> None:
    """Each image of a batch, suppressed on one thread or side by side on two."""
    generator = torch.Generator().manual_seed(0)
    num_images, num_boxes, num_classes, iou_threshold = 5, 400, 3, 0.5
    centres = torch.rand(num_images, num_boxes, 2, generator=generator) * 200
    sizes = 10 + torch.rand(num_images, num_boxes, 2, generator=generator) * 60
    probabilities = torch.rand(num_images, num_boxes, 1 + num_classes, generator=generator)
    batch = torch.cat([centres, sizes, probabilities], dim=2)

    results = non_max_suppression(
        batch,
        conf_threshold=0.1,
        iou_threshold=iou_threshold,
        max_detections=10_000,
        threads=threads,
    )

    assert len(results) == num_images
    for image, result in zip(batch, results, strict=True):
        boxes = box_convert(image[:, :4], in_fmt="cxcywh", out_fmt="xyxy")
        scores = image[:, 5:] * image[:, 4:5]
        for label in range(num_classes):
            candidates = (scores[:, label] > 0.1).nonzero().squeeze(1)
            kept = candidates[nms(boxes[candidates], scores[candidates, label], iou_threshold)]
            mine = result["labels"] == label
            assert torch.equal(result["boxes"][mine], boxes[kept])
            assert torch.equal(result["scores"][mine], scores[kept, label])

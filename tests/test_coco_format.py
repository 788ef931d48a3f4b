"""The column-wise COCO datasets against torchmetrics' own conversion, annotation by annotation."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from yolor_lightning.tasks.coco_format import coco_datasets
from yolor_lightning.tasks.evaluation import (
    COCO_STAT_NAMES,
    TORCHMETRICS_STAT_KEYS,
    CocoEvaluator,
)


def random_images(seed: int, count: int) -> tuple[list[dict], list[dict]]:
    """Detections and ground truth with empty images, crowds, zero areas and score ties."""
    generator = torch.Generator().manual_seed(seed)

    def boxes(n: int) -> torch.Tensor:
        corner = torch.rand(n, 2, generator=generator) * 200
        size = torch.rand(n, 2, generator=generator) * 60 + 10
        return torch.cat([corner, corner + size], dim=1)

    detections, ground_truth = [], []
    for _ in range(count):
        n_gt, n_extra = (int(v) for v in torch.randint(0, 6, (2,), generator=generator))
        gt_boxes, gt_labels = boxes(n_gt), torch.randint(0, 4, (n_gt,), generator=generator)
        area = torch.rand(n_gt, generator=generator) * 3000
        area[torch.rand(n_gt, generator=generator) < 0.3] = 0  # falls back to w x h
        ground_truth.append(
            {
                "boxes": gt_boxes,
                "labels": gt_labels,
                "area": area,
                "iscrowd": (torch.rand(n_gt, generator=generator) < 0.1).long(),
            }
        )
        jitter = torch.randn(n_gt, 4, generator=generator) * 2  # hits and misses at every IoU
        n_det = n_gt + n_extra
        detections.append(
            {
                "boxes": torch.cat([gt_boxes + jitter, boxes(n_extra)]),
                "scores": torch.rand(n_det, generator=generator).round(decimals=1),  # ties
                "labels": torch.cat(
                    [gt_labels, torch.randint(0, 5, (n_extra,), generator=generator)]
                ),
            }
        )
    return detections, ground_truth


def torchmetrics_metric(detections: list[dict], ground_truth: list[dict]) -> MeanAveragePrecision:
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.warn_on_many_detections = False
    metric.update(detections, ground_truth)
    return metric


def test_datasets_equal_torchmetrics_conversion() -> None:
    metric = torchmetrics_metric(*random_images(seed=0, count=40))
    expected_detections, expected_ground_truth = metric._coco_backend._get_coco_datasets(
        metric.groundtruth_labels,
        metric.groundtruth_box,
        [],
        metric.groundtruth_crowds,
        metric.groundtruth_area,
        metric.detection_labels,
        metric.detection_box,
        [],
        metric.detection_scores,
        ("bbox",),
        average="macro",
    )
    detections, ground_truth = coco_datasets(
        metric.detection_box,
        metric.detection_scores,
        metric.detection_labels,
        metric.groundtruth_box,
        metric.groundtruth_labels,
        metric.groundtruth_area,
        metric.groundtruth_crowds,
    )
    for ours, theirs in ((detections, expected_detections), (ground_truth, expected_ground_truth)):
        assert [{"id": image["id"]} for image in ours.dataset["images"]] == theirs.dataset["images"]
        assert ours.dataset["categories"] == theirs.dataset["categories"]
        expected = theirs.dataset["annotations"]
        ours_annotations = ours.dataset["annotations"]
        assert len(ours_annotations) == len(expected)
        # hotcoco adds the box's polygon to results, as pycocotools' loadRes does: not scored
        kept = [{k: a[k] for k in e} for a, e in zip(ours_annotations, expected, strict=True)]
        assert kept == expected
    truth = ground_truth.dataset["annotations"]
    assert any(a["area"] == a["bbox"][2] * a["bbox"][3] for a in truth)
    assert any(a["iscrowd"] for a in truth)


@pytest.mark.parametrize("seed", [1, 2])
def test_stats_equal_torchmetrics(seed: int) -> None:
    images = random_images(seed=seed, count=60)
    evaluator = CocoEvaluator()
    evaluator.update(*images)
    expected = torchmetrics_metric(*images)
    expected.iou_thresholds = evaluator.iou_thresholds
    expected.rec_thresholds = evaluator.rec_thresholds
    stats = expected.compute()
    ours = evaluator.compute()
    assert 0.2 < ours["AP"] < 0.95
    # torchmetrics rounds COCOeval's float64 stats to float32; the evaluator keeps them
    assert {name: torch.tensor(value).float().item() for name, value in ours.items()} == {
        name: stats[key].item()
        for name, key in zip(COCO_STAT_NAMES, TORCHMETRICS_STAT_KEYS, strict=True)
    }


def test_no_images_scores_minus_one() -> None:
    assert set(CocoEvaluator().compute().values()) == {-1.0}

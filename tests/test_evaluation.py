"""CocoEvaluator against pycocotools on real COCO data, and on cases computed by hand."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from yolor_lightning.tasks.evaluation import COCO_STAT_NAMES, CocoEvaluator

COCO_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cocoapi"
GROUND_TRUTH = COCO_FIXTURES / "instances_val2014_100.json"
DETECTIONS = COCO_FIXTURES / "instances_val2014_fakebbox100_results.json"


def xywh_to_xyxy(boxes: list[list[float]]) -> Tensor:
    xywh = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def pycocotools_stats() -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(GROUND_TRUTH))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(DETECTIONS)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats.tolist()


def one_box(box: list[float], label: int = 0) -> dict[str, Tensor]:
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}


def ground_truth(box: list[float], label: int = 0, iscrowd: int = 0) -> dict[str, Tensor]:
    width, height = box[2] - box[0], box[3] - box[1]
    return {
        **one_box(box, label),
        "area": torch.tensor([width * height]),
        "iscrowd": torch.tensor([iscrowd]),
    }


def detection(box: list[float], score: float = 0.9, label: int = 0) -> dict[str, Tensor]:
    return {**one_box(box, label), "scores": torch.tensor([score])}


def test_stats_equal_pycocotools_on_coco_val2014_100() -> None:
    dataset = json.loads(GROUND_TRUTH.read_text())
    annotations = defaultdict(list)
    for annotation in dataset["annotations"]:
        annotations[annotation["image_id"]].append(annotation)
    results = defaultdict(list)
    for result in json.loads(DETECTIONS.read_text()):
        results[result["image_id"]].append(result)

    evaluator = CocoEvaluator()
    # COCOeval visits images by ascending id, which decides ties in score between images.
    for image_id in sorted(image["id"] for image in dataset["images"]):
        gts, dets = annotations[image_id], results[image_id]
        evaluator.update(
            [
                {
                    "boxes": xywh_to_xyxy([d["bbox"] for d in dets]),
                    "scores": torch.tensor([d["score"] for d in dets]),
                    "labels": torch.tensor([d["category_id"] for d in dets], dtype=torch.int64),
                }
            ],
            [
                {
                    "boxes": xywh_to_xyxy([g["bbox"] for g in gts]),
                    "labels": torch.tensor([g["category_id"] for g in gts], dtype=torch.int64),
                    "area": torch.tensor([g["area"] for g in gts], dtype=torch.float64),
                    "iscrowd": torch.tensor([g["iscrowd"] for g in gts], dtype=torch.int64),
                }
            ],
        )
    stats = evaluator.compute()

    assert tuple(stats) == COCO_STAT_NAMES
    expected = dict(zip(COCO_STAT_NAMES, pycocotools_stats(), strict=True))
    assert stats == pytest.approx(expected, rel=0, abs=1e-6)
    assert stats["AP"] == pytest.approx(0.505, abs=5e-4)


def test_perfect_detection_scores_one() -> None:
    evaluator = CocoEvaluator()
    evaluator.update([detection([10, 10, 60, 60])], [ground_truth([10, 10, 60, 60])])
    stats = evaluator.compute()
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR100"] == pytest.approx(1.0)


def test_detection_at_iou_0_6_counts_for_ap50_not_ap75() -> None:
    evaluator = CocoEvaluator()
    # A 60x100 box shifted by 15 px: intersection 4500, union 2 * 6000 - 4500 = 7500, IoU 0.6.
    evaluator.update([detection([15, 0, 75, 100])], [ground_truth([0, 0, 60, 100])])
    stats = evaluator.compute()
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(0.0)
    # IoU >= threshold matches 0.50, 0.55 and 0.60 of the ten (a float32 0.6 threshold would not).
    assert stats["AP"] == pytest.approx(0.3)


def test_size_ranges_use_the_annotation_area() -> None:
    evaluator = CocoEvaluator()
    target = ground_truth([0, 0, 100, 100])
    target["area"] = torch.tensor([500.0])  # a thin object in a large box: COCO calls it small
    evaluator.update([detection([0, 0, 100, 100])], [target])
    stats = evaluator.compute()
    assert stats["APs"] == pytest.approx(1.0)
    assert stats["APl"] == -1.0


def test_detections_on_crowd_regions_are_ignored() -> None:
    evaluator = CocoEvaluator()
    person = ground_truth([0, 0, 50, 50])
    crowd = ground_truth([100, 100, 300, 300], iscrowd=1)
    targets = {key: torch.cat([person[key], crowd[key]]) for key in person}
    predictions = {
        key: torch.cat([detection([0, 0, 50, 50])[key], detection([150, 150, 200, 200], 0.95)[key]])
        for key in ("boxes", "scores", "labels")
    }
    evaluator.update([predictions], [targets])
    assert evaluator.compute()["AP"] == pytest.approx(1.0)


def test_images_without_detections_lower_recall() -> None:
    evaluator = CocoEvaluator()
    empty = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    evaluator.update(
        [detection([0, 0, 50, 50]), empty],
        [ground_truth([0, 0, 50, 50]), ground_truth([0, 0, 50, 50])],
    )
    assert evaluator.compute()["AR100"] == pytest.approx(0.5)


def test_reset_forgets_previous_updates() -> None:
    evaluator = CocoEvaluator()
    evaluator.update([detection([100, 100, 150, 150])], [ground_truth([0, 0, 50, 50])])
    assert evaluator.compute()["AP"] == pytest.approx(0.0)
    evaluator.reset()
    evaluator.update([detection([0, 0, 50, 50])], [ground_truth([0, 0, 50, 50])])
    assert evaluator.compute()["AP"] == pytest.approx(1.0)


def test_ground_truth_without_area_is_refused() -> None:
    target = ground_truth([0, 0, 50, 50])
    del target["area"]
    with pytest.raises(KeyError, match="area"):
        CocoEvaluator().update([detection([0, 0, 50, 50])], [target])

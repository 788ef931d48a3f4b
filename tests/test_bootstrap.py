"""Per-image evaluation results and the bootstrap over images, against pycocotools on real COCO
data: AP of a resampled image list recomputed from scratch must equal the fast path."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolor_lightning.report import write_report
from yolor_lightning.report.bootstrap import (
    ResampledAP,
    bootstrap_ap,
    evaluation_noise,
    resample_counts,
)
from yolor_lightning.results import write_results
from yolor_lightning.tasks.evaluation import CocoEvaluator
from yolor_lightning.tasks.per_image import PER_IMAGE_FILE, PerImageResults

COCO_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cocoapi"
GROUND_TRUTH = json.loads((COCO_FIXTURES / "instances_val2014_100.json").read_text())
DETECTIONS = json.loads((COCO_FIXTURES / "instances_val2014_fakebbox100_results.json").read_text())
IMAGE_IDS = sorted(image["id"] for image in GROUND_TRUTH["images"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def by_image(annotations: list[dict]) -> dict[int, list[dict]]:
    grouped = defaultdict(list)
    for annotation in annotations:
        grouped[annotation["image_id"]].append(annotation)
    return grouped


def xyxy(boxes: list[list[float]]) -> torch.Tensor:
    xywh = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def fixture_evaluator(detections: list[dict] = DETECTIONS) -> CocoEvaluator:
    """The fixture fed image by image in ascending id order, as COCOeval visits it."""
    truth, found = by_image(GROUND_TRUTH["annotations"]), by_image(detections)
    evaluator = CocoEvaluator()
    for image_id in IMAGE_IDS:
        gts, dets = truth[image_id], found[image_id]
        evaluator.update(
            [
                {
                    "boxes": xyxy([d["bbox"] for d in dets]),
                    "scores": torch.tensor([d["score"] for d in dets]),
                    "labels": torch.tensor([d["category_id"] for d in dets], dtype=torch.int64),
                }
            ],
            [
                {
                    "boxes": xyxy([g["bbox"] for g in gts]),
                    "labels": torch.tensor([g["category_id"] for g in gts], dtype=torch.int64),
                    "area": torch.tensor([g["area"] for g in gts], dtype=torch.float64),
                    "iscrowd": torch.tensor([g["iscrowd"] for g in gts], dtype=torch.int64),
                }
            ],
        )
    return evaluator


def fixture_results(detections: list[dict] = DETECTIONS) -> tuple[dict, PerImageResults]:
    evaluator = fixture_evaluator(detections)
    stats = evaluator.compute()
    return stats, evaluator.per_image_results()


def brute_force_ap(counts: np.ndarray, detections: list[dict] = DETECTIONS) -> tuple[float, float]:
    """pycocotools on a new dataset holding ``counts[i]`` copies of image ``i`` (copies side by
    side, in ascending image order), every annotation copied with it."""
    truth, found = by_image(GROUND_TRUTH["annotations"]), by_image(detections)
    images, gts, dets = [], [], []
    for index, image_id in enumerate(IMAGE_IDS):
        for _ in range(counts[index]):
            new_id = len(images) + 1
            images.append({"id": new_id})
            gts += [
                g | {"id": len(gts) + n + 1, "image_id": new_id}
                for n, g in enumerate(truth[image_id])
            ]
            dets += [d | {"image_id": new_id} for d in found[image_id]]
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": images,
            "categories": GROUND_TRUTH["categories"],
            "annotations": gts,
        }
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(dets), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0], evaluation.stats[1]


def test_ap_from_per_image_results_equals_the_evaluator():
    stats, results = fixture_results()

    ap = ResampledAP(results)(np.ones(results.num_images, dtype=np.int64))

    assert results.num_images == 100
    assert ap["AP"] == pytest.approx(stats["AP"], abs=1e-6)
    assert ap["AP50"] == pytest.approx(stats["AP50"], abs=1e-6)
    assert ap["AP"] == pytest.approx(0.505, abs=5e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_ap_equals_pycocotools_on_the_resampled_image_list(seed: int):
    _, results = fixture_results()
    (counts,) = resample_counts(results.num_images, resamples=1, seed=seed)

    fast = ResampledAP(results)(counts)

    assert counts.sum() == 100 and counts.max() >= 2  # a real resample: repeats, gaps
    ap, ap50 = brute_force_ap(counts)
    assert fast["AP"] == pytest.approx(ap, rel=0, abs=1e-12)
    assert fast["AP50"] == pytest.approx(ap50, rel=0, abs=1e-12)


def test_scores_tied_within_an_image_repeat_as_a_block_per_copy():
    """Every detection of an image gets its image's first score: many ties inside images, and
    copies of an image interleave them as COCO's stable sort does."""
    first = {}
    for d in DETECTIONS:
        first.setdefault(d["image_id"], d["score"])
    tied = [d | {"score": first[d["image_id"]]} for d in DETECTIONS]
    _, results = fixture_results(tied)
    counts = np.zeros(100, dtype=np.int64)
    counts[:50] = 2

    fast = ResampledAP(results)(counts)

    ap, ap50 = brute_force_ap(counts, tied)
    assert fast["AP"] == pytest.approx(ap, rel=0, abs=1e-12)
    assert fast["AP50"] == pytest.approx(ap50, rel=0, abs=1e-12)


def test_per_image_results_survive_a_save_and_load(tmp_path: Path):
    _, results = fixture_results()

    loaded = PerImageResults.load(results.save(tmp_path / PER_IMAGE_FILE))

    assert loaded.ground_truth_digest == results.ground_truth_digest
    for name in ("category_ids", "num_gt", "image", "category", "score", "matched", "ignored"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(results, name))
    assert [p.name for p in tmp_path.iterdir()] == [PER_IMAGE_FILE]


def test_identical_runs_have_no_evaluation_noise_and_a_run_missing_detections_has_some():
    _, results = fixture_results()
    _, worse_results = fixture_results([d for n, d in enumerate(DETECTIONS) if n % 3])
    counts = resample_counts(results.num_images, resamples=50, seed=0)

    same = bootstrap_ap(results, counts)["AP"]
    other = bootstrap_ap(worse_results, counts)["AP"]

    assert evaluation_noise([same - same]).std == 0.0
    noise = evaluation_noise([other - same])
    assert noise.resamples == 50 and noise.std > 0
    assert noise.low <= np.mean(other - same) <= noise.high < 0


def test_report_on_run_folders_shows_the_evaluation_noise_of_each_pair(tmp_path: Path):
    """Run folders built from real files: results.json from the evaluator, per_image_eval.npz
    from the same evaluation. ``fewer`` drops a third of the detections (a different third per
    seed), the baseline drops a different tenth per seed."""
    for seed in range(3):
        variants = {
            "baseline": [d for n, d in enumerate(DETECTIONS) if (n + seed) % 10],
            "fewer": [d for n, d in enumerate(DETECTIONS) if (n + seed) % 3],
        }
        for experiment, detections in variants.items():
            folder = tmp_path / f"{experiment}_{seed}"
            stats, results = fixture_results(detections)
            results.save(folder / PER_IMAGE_FILE)
            write_results(
                folder,
                {
                    "experiment": experiment,
                    "overrides": [f"+experiment={experiment}", f"seed={seed}"],
                    "choices": {"seed": seed},
                    "metrics": stats,
                },
            )

    report = write_report([tmp_path], resamples=100)

    (comparison,) = report.comparisons
    assert comparison.n == 3 and comparison.verdict == "worse"
    runs = {job.folder.name: job.results["metrics"]["AP"] for job in report.table.rows[1].jobs}
    bases = {job.folder.name: job.results["metrics"]["AP"] for job in report.table.rows[0].jobs}
    expected = [runs[f"fewer_{s}"] - bases[f"baseline_{s}"] for s in range(3)]
    assert [p.delta for p in comparison.pairs] == pytest.approx(expected)
    counts = resample_counts(100, resamples=100, seed=0)
    pair_deltas = [
        bootstrap_ap(PerImageResults.load(tmp_path / f"fewer_{s}" / PER_IMAGE_FILE), counts)["AP"]
        - bootstrap_ap(PerImageResults.load(tmp_path / f"baseline_{s}" / PER_IMAGE_FILE), counts)[
            "AP"
        ]
        for s in range(3)
    ]
    assert comparison.noise == evaluation_noise(pair_deltas)
    assert comparison.noise.high < 0
    line = next(
        line for line in report.markdown.splitlines() if line.startswith("| `fewer` | `baseline`")
    )
    assert f"± {100 * comparison.noise.std:.2f} [" in line
    assert float(read_csv(report.paths[1])[1]["eval_std"]) == pytest.approx(comparison.noise.std)


def test_a_corrupt_per_image_file_leaves_the_pair_without_evaluation_noise(tmp_path: Path):
    stats, results = fixture_results()
    for experiment in ("baseline", "same"):
        folder = tmp_path / experiment
        results.save(folder / PER_IMAGE_FILE)
        write_results(
            folder,
            {"experiment": experiment, "overrides": [], "choices": {"seed": 0}, "metrics": stats},
        )
    (tmp_path / "same" / PER_IMAGE_FILE).write_bytes(b"PK\x03\x04 truncated")

    report = write_report([tmp_path], resamples=10)

    (comparison,) = report.comparisons
    assert comparison.noise is None
    assert comparison.noise_note.startswith(f"unreadable {tmp_path / 'same' / PER_IMAGE_FILE}")

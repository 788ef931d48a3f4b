"""Per-image COCO evaluation results: enough to recompute COCO AP for any multiset of images.

COCOeval matches detections to ground truth one image and one category at a time
(``evaluateImg``), independently of the other images; only ``accumulate`` mixes images, by
sorting the detections of all images by score. So per image, category and IoU threshold the
detection scores, their match flags (true positive / ignored) and the number of non-ignored
ground truths are all it takes to compute AP over a resampled image set, without re-matching:
the paired bootstrap over validation images in the report (``report/bootstrap.py``) does that
1,000 times per run.

Only COCO's headline setting is kept: area range ``all``, at most 100 detections per image and
category. Images are numbered in evaluation order (the validation split's order), which two
runs on the same split share; ``ground_truth_digest`` tells whether they do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import hotcoco
import numpy as np
from torch import Tensor

from yolor_lightning.atomic import atomic_path
from yolor_lightning.tasks.coco_format import coco_datasets

PER_IMAGE_FILE = "per_image_eval.npz"
MAX_DETECTIONS = 100
ALL_AREAS = (0.0, 1e5**2)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class PerImageResults:
    """Matched detections of every image, flattened, in COCO's per-image order.

    ``num_gt[i, k]``: non-ignored ground truths of image ``i`` in category ``k``.
    Detection ``d`` belongs to image ``image[d]`` and category index ``category[d]``;
    ``matched[t, d]`` / ``ignored[t, d]``: at IoU threshold ``t`` it matched a ground truth /
    matched an ignored (crowd) one. Within an image and category, detections are sorted by
    descending score (stable), as COCOeval keeps them.
    """

    category_ids: np.ndarray
    num_gt: np.ndarray
    image: np.ndarray
    category: np.ndarray
    score: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    ground_truth_digest: str

    @property
    def num_images(self) -> int:
        return self.num_gt.shape[0]

    def save(self, path: Path) -> Path:
        """Write the arrays to ``path`` (an ``.npz``) atomically."""
        with atomic_path(path) as temporary, temporary.open("wb") as file:
            np.savez_compressed(
                file,
                category_ids=self.category_ids,
                num_gt=self.num_gt,
                image=self.image,
                category=self.category,
                score=self.score,
                matched=self.matched,
                ignored=self.ignored,
                ground_truth_digest=np.array(self.ground_truth_digest),
            )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> PerImageResults:
        with np.load(path, allow_pickle=False) as arrays:
            fields = {name: arrays[name] for name in arrays.files}
        fields["ground_truth_digest"] = str(fields["ground_truth_digest"])
        return cls(**fields)


def ground_truth_digest(ground_truth: list[dict[str, Tensor]]) -> str:
    """A fingerprint of the evaluated images' ground truth, in order: equal for two runs on the
    same validation split."""
    digest = hashlib.sha256()
    for image in ground_truth:
        for key in ("boxes", "labels", "iscrowd"):
            digest.update(image[key].detach().cpu().double().numpy().tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def match_images(
    detections: list[dict[str, Tensor]], ground_truth: list[dict[str, Tensor]]
) -> PerImageResults:
    """COCOeval's per-image matching (``evaluateImg``, run by hotcoco: pycocotools' matches) of
    detections ``{boxes, scores, labels}`` against ground truth ``{boxes, labels, area,
    iscrowd}``, boxes in COCO's xywh as the evaluator keeps them."""
    found, truth = coco_datasets(
        [image["boxes"] for image in detections],
        [image["scores"] for image in detections],
        [image["labels"] for image in detections],
        [image["boxes"] for image in ground_truth],
        [image["labels"] for image in ground_truth],
        [image["area"] for image in ground_truth],
        [image["iscrowd"] for image in ground_truth],
    )
    labels = sorted(truth.cats)
    evaluation = hotcoco.COCOeval(truth, found, "bbox")
    evaluation.params.iou_thrs = IOU_THRESHOLDS.tolist()
    evaluation.params.rec_thrs = RECALL_THRESHOLDS.tolist()
    evaluation.params.max_dets = [MAX_DETECTIONS]
    evaluation.params.area_rng = [list(ALL_AREAS)]
    evaluation.params.area_rng_lbl = ["all"]
    evaluation.evaluate()

    num_gt = np.zeros((len(ground_truth), len(labels)), dtype=np.int64)
    image, category, score, matched, ignored = [], [], [], [], []
    thresholds = len(IOU_THRESHOLDS)
    # eval_imgs is ordered category-major, then image, as pycocotools' evalImgs, without the
    # empty (image, category) pairs; COCO concatenates images in id order.
    for entry in evaluation.eval_imgs:
        k = labels.index(entry["category_id"])
        num_gt[entry["image_id"], k] = entry["gtIgnore"].count(False)
        count = len(entry["dtScores"])
        image.append(np.full(count, entry["image_id"], dtype=np.int32))
        category.append(np.full(count, k, dtype=np.int32))
        score.append(np.asarray(entry["dtScores"], dtype=np.float64))
        matched.append(np.asarray(entry["dtMatches"]).reshape(thresholds, count) > 0)
        ignored.append(np.asarray(entry["dtIgnore"], dtype=bool).reshape(thresholds, count))
    return PerImageResults(
        category_ids=np.asarray(labels, dtype=np.int64),
        num_gt=num_gt,
        image=np.concatenate(image) if image else np.zeros(0, np.int32),
        category=np.concatenate(category) if category else np.zeros(0, np.int32),
        score=np.concatenate(score) if score else np.zeros(0),
        matched=np.concatenate(matched, axis=1) if matched else np.zeros((thresholds, 0), bool),
        ignored=np.concatenate(ignored, axis=1) if ignored else np.zeros((thresholds, 0), bool),
        ground_truth_digest=ground_truth_digest(ground_truth),
    )

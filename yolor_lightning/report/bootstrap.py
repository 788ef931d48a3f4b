"""Evaluation noise: COCO AP over resampled validation images, from per-image results.

A run's AP is measured on a finite validation split; another draw of images would give another
AP. The paired bootstrap resamples the images with replacement (``resample_counts``: how many
times each image is drawn) and recomputes AP for the same resampled sets for every run, so the
spread of a difference of two runs' AP over resamples is the evaluation noise of that
difference with the trained weights held fixed.

``average_precision`` is COCOeval's ``accumulate`` + ``summarize`` (area ``all``, 100
detections) over a multiset of images, reading the per-image matches of
:mod:`yolor_lightning.tasks.per_image`. It equals COCOeval run on the resampled image list with
its copies laid out in ascending image order, each image's copies side by side, ties in score
included: detections tied within one image repeat as a block per copy, as COCO's stable sort
leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from yolor_lightning.tasks.per_image import RECALL_THRESHOLDS, PerImageResults

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
BOOTSTRAP_METRICS = ("AP", "AP50")


@dataclass(frozen=True)
class SortedCategory:
    """One category's detections in COCO's accumulate order (score descending, stable over
    images in order), grouped in blocks of one image's detections tied in score."""

    true_positive: np.ndarray
    false_positive: np.ndarray
    block_start: np.ndarray
    block_size: np.ndarray
    block_image: np.ndarray
    num_gt: np.ndarray


def sort_category(results: PerImageResults, k: int) -> SortedCategory:
    members = np.flatnonzero(results.category == k)
    order = members[np.argsort(-results.score[members], kind="mergesort")]
    score, image = results.score[order], results.image[order]
    new_block = np.ones(len(order), dtype=bool)
    new_block[1:] = (score[1:] != score[:-1]) | (image[1:] != image[:-1])
    block_start = np.flatnonzero(new_block)
    counted = ~results.ignored[:, order]
    return SortedCategory(
        true_positive=results.matched[:, order] & counted,
        false_positive=~results.matched[:, order] & counted,
        block_start=block_start,
        block_size=np.diff(np.append(block_start, len(order))),
        block_image=image[block_start],
        num_gt=results.num_gt[:, k],
    )


def precision_at_recalls(true_positive: np.ndarray, false_positive: np.ndarray, num_gt: int):
    """COCO's interpolated precision [T, R] of one category's detection sequence."""
    tp = np.cumsum(true_positive, axis=1, dtype=np.float64)
    fp = np.cumsum(false_positive, axis=1, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    interpolated = np.zeros((tp.shape[0], len(RECALL_THRESHOLDS)))
    for t in range(tp.shape[0]):
        found = np.searchsorted(recall[t], RECALL_THRESHOLDS, side="left")
        inside = found < tp.shape[1]
        interpolated[t, inside] = envelope[t, found[inside]]
    return interpolated


class ResampledAP:
    """AP and AP50 of one run over any multiset of its validation images."""

    def __init__(self, results: PerImageResults) -> None:
        self.results = results

    @cached_property
    def categories(self) -> list[SortedCategory]:
        return [sort_category(self.results, k) for k in range(len(self.results.category_ids))]

    def __call__(self, counts: np.ndarray) -> dict[str, float]:
        """``counts[i]``: how many times image ``i`` is in the multiset (all ones: the split).
        -1 where no category has ground truth, as COCO reports it."""
        precisions = []
        for category in self.categories:
            num_gt = int(counts @ category.num_gt)
            if num_gt == 0:
                continue
            copies = counts[category.block_image]
            lengths = category.block_size * copies
            block = np.repeat(np.arange(len(lengths)), lengths)
            offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            position = category.block_start[block] + offset % category.block_size[block]
            precisions.append(
                precision_at_recalls(
                    category.true_positive[:, position],
                    category.false_positive[:, position],
                    num_gt,
                )
            )
        if not precisions:
            return dict.fromkeys(BOOTSTRAP_METRICS, -1.0)
        stacked = np.stack(precisions)
        return {"AP": float(stacked.mean()), "AP50": float(stacked[:, 0].mean())}


def resample_counts(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, num_images]: how often each image is drawn in each bootstrap resample
    (``num_images`` draws with replacement); the same for every run of the same split size."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=resamples)


def bootstrap_ap(results: PerImageResults, counts: np.ndarray) -> dict[str, np.ndarray]:
    """AP and AP50 of one run for each resample (row) of ``counts``."""
    resampled = ResampledAP(results)
    values = [resampled(row) for row in counts]
    return {name: np.array([value[name] for value in values]) for name in BOOTSTRAP_METRICS}


@dataclass(frozen=True)
class EvaluationNoise:
    """Bootstrap spread of the mean paired difference with the trained weights held fixed."""

    std: float
    low: float
    high: float
    resamples: int


def evaluation_noise(deltas: Sequence[np.ndarray], confidence: float = 0.95) -> EvaluationNoise:
    """From each pair's per-resample difference (same resamples for all pairs): the standard
    deviation and the percentile interval of their mean over pairs."""
    mean = np.mean(np.stack(deltas), axis=0)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(mean, [tail, 100 - tail])
    return EvaluationNoise(float(np.std(mean, ddof=1)), float(low), float(high), len(mean))

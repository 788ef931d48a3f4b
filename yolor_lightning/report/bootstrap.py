"""Evaluation noise: COCO AP over resampled validation images, from per-image results.

A run's AP is measured on a finite validation split; another draw of images would give another
AP. The paired bootstrap resamples the images with replacement (``resample_counts``: how many
times each image is drawn) and recomputes AP for the same resampled sets for every run, so the
spread of a difference of two runs' AP over resamples is the evaluation noise of that
difference with the trained weights held fixed.

``ResampledAP`` is COCOeval's ``accumulate`` + ``summarize`` (area ``all``, 100
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
class ThresholdMatches:
    """One IoU threshold's true positives of a category, in accumulate order, with what the
    resampled sequence needs to count the false positives before each of them."""

    block: np.ndarray  # the block of each true positive (ascending)
    offset: np.ndarray  # its place inside its block
    false_within: np.ndarray  # false positives before it inside its block
    block_false: np.ndarray  # false positives in its block
    ignored_block: np.ndarray  # the block of each ignored detection (ascending)


@dataclass(frozen=True)
class SortedCategory:
    """One category's detections in COCO's accumulate order (score descending, stable over
    images in order), grouped in blocks of one image's detections tied in score."""

    block_size: np.ndarray
    block_image: np.ndarray
    num_gt: np.ndarray
    thresholds: list[ThresholdMatches]


def threshold_matches(
    true_positive: np.ndarray, ignored: np.ndarray, block_start: np.ndarray
) -> ThresholdMatches:
    false_before = np.concatenate([[0], np.cumsum(~true_positive & ~ignored)])
    block_false = np.diff(false_before[np.append(block_start, len(true_positive))])
    positions = np.flatnonzero(true_positive)
    block = np.searchsorted(block_start, positions, side="right") - 1
    ignored_positions = np.flatnonzero(ignored)
    return ThresholdMatches(
        block=block,
        offset=positions - block_start[block],
        false_within=false_before[positions] - false_before[block_start[block]],
        block_false=block_false[block],
        ignored_block=np.searchsorted(block_start, ignored_positions, side="right") - 1,
    )


def sort_category(results: PerImageResults, k: int) -> SortedCategory:
    members = np.flatnonzero(results.category == k)
    order = members[np.argsort(-results.score[members], kind="mergesort")]
    score, image = results.score[order], results.image[order]
    new_block = np.ones(len(order), dtype=bool)
    new_block[1:] = (score[1:] != score[:-1]) | (image[1:] != image[:-1])
    block_start = np.flatnonzero(new_block)
    ignored = results.ignored[:, order]
    matched = results.matched[:, order] & ~ignored
    return SortedCategory(
        block_size=np.diff(np.append(block_start, len(order))),
        block_image=image[block_start],
        num_gt=results.num_gt[:, k],
        thresholds=[
            threshold_matches(matched[t], ignored[t], block_start) for t in range(len(matched))
        ],
    )


def weight_before(block: np.ndarray, weight: np.ndarray, query: np.ndarray) -> np.ndarray:
    """For each block in ``query``: the summed ``weight`` of the entries (listed by ascending
    ``block``) that lie in earlier blocks."""
    return np.concatenate([[0], np.cumsum(weight)])[np.searchsorted(block, query, side="left")]


def interpolated_precision(
    matches: ThresholdMatches, copies: np.ndarray, detections_before: np.ndarray, num_gt: int
) -> np.ndarray:
    """COCO's interpolated precision at one IoU threshold over the multiset in which block
    ``b`` repeats ``copies[b]`` times (its copies side by side), from the true positives alone.

    Recall rises only at true positives, and a false positive's precision is below that of the
    latest true positive before it, so the precision envelope read at the recall thresholds
    never comes from a false positive. The false positives before a true positive's copy are
    the counted detections in earlier blocks (``detections_before``, copies included) less the
    true positives and ignored detections there, plus those of the earlier copies of its own
    block and those before it in its copy. The arithmetic is COCOeval's, so the values are
    bit-identical to COCOeval on the expanded image list.
    """
    interpolated = np.zeros(len(RECALL_THRESHOLDS))
    if len(matches.block) == 0:
        return interpolated
    repeats = copies[matches.block]
    earlier = (
        detections_before[matches.block]
        - weight_before(matches.block, repeats, matches.block)
        - weight_before(matches.ignored_block, copies[matches.ignored_block], matches.block)
    )
    entry = np.repeat(np.arange(len(repeats)), repeats)
    copy = np.arange(len(entry)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    order = np.lexsort((matches.offset[entry], copy, matches.block[entry]))
    entry, copy = entry[order], copy[order]
    false_before = earlier[entry] + copy * matches.block_false[entry] + matches.false_within[entry]
    tp = np.arange(1, len(entry) + 1, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (false_before.astype(np.float64) + tp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    found = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    inside = found < len(recall)
    interpolated[inside] = envelope[found[inside]]
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
            detections = copies * category.block_size
            detections_before = np.cumsum(detections) - detections
            precisions.append(
                np.stack(
                    [
                        interpolated_precision(matches, copies, detections_before, num_gt)
                        for matches in category.thresholds
                    ]
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

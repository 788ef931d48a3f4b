"""What ``data.skip_bad`` left out, counted per split and by reason.

Two kinds of items are skipped: those the annotation checks of :class:`CocoDetection` leave out
before training (``bad_box``, ``missing_image``, ``unsafe_file_name``, ...), and images found
unusable only when a batch is loaded (``unreadable_image``, ``image_size_mismatch``), which the
loader's workers report as :class:`SkippedSample` items of the batch. An image met in several
epochs is counted once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import NamedTuple

from yolor_lightning.data.coco import CocoDetection


class SkippedSample(NamedTuple):
    """Served in place of a sample whose image (of a mosaic: any of its four) is unusable (a
    named tuple: Lightning moves batches to the device through it, as it cannot through a
    frozen dataclass)."""

    reason: str
    image_id: int | None


class NoDataLeftError(RuntimeError):
    """Every image of a split was skipped: there is nothing to train or validate on."""


class SkipCount:
    """Skipped items of each split by reason (``as_dict``: ``{split: {reason: count}}``)."""

    def __init__(self) -> None:
        self._splits: dict[str, CocoDetection] = {}
        self._found: defaultdict[str, defaultdict[str, set]] = defaultdict(lambda: defaultdict(set))

    def add_split(self, split: str, dataset: CocoDetection) -> None:
        """Count what ``dataset``'s annotation checks left out (its ``skipped``)."""
        self._splits[split] = dataset

    def add_batch(self, split: str, skipped: list[SkippedSample]) -> None:
        """Count the samples a batch of ``split`` dropped; raise :class:`NoDataLeftError` once
        every image of the split has been found unusable."""
        for sample in skipped:
            self._found[split][sample.reason].add(sample.image_id)
        bad = set().union(*self._found[split].values())
        dataset = self._splits.get(split)
        if dataset is not None and len(bad) >= len(dataset):
            raise NoDataLeftError(
                f"{dataset.ann_file}: all {len(dataset)} images of the {split} split are "
                f"unusable (data.skip_bad skipped them: {self.as_dict()[split]}); nothing is "
                "left to train or validate on"
            )

    def as_dict(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for split, dataset in self._splits.items():
            found = Counter({reason: len(ids) for reason, ids in self._found[split].items()})
            counts[split] = dict(sorted((dataset.skipped + found).items()))
        return counts

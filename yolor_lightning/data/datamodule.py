"""DataModules for COCO-format detection data: real COCO and the generated ``shapes`` set.

Batches (see :func:`collate_detection`) are::

    {"images": uint8 [B, 3, S, S],
     "targets": [{"boxes": float32 [n, 4] xyxy input pixels, "labels": int64 [n],
                  "identities": int64 [n]}, ...],           # crowd boxes excluded
     "meta": [{"image_id", "file_name", "scale", "pad", "orig_size", "gt"}, ...],
     "num_skipped": int}                                     # unreadable samples dropped

``identities`` is the annotation's ``track_id`` (its label when the file has none). ``scale``,
``pad`` and ``orig_size`` are ``None`` for mosaic samples; ``gt`` (all original annotations in
original pixels: boxes, labels, area, iscrowd) is only in val/test batches.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from yolor_lightning.data.coco import CocoDetection, UnreadableImageError
from yolor_lightning.data.shapes import CATEGORIES, ShapesConfig, default_cache_root, ensure_shapes
from yolor_lightning.data.transforms import (
    Augment,
    Sample,
    clip_boxes,
    letterbox,
    train_transform,
)

log = logging.getLogger(__name__)


class DetectionDataset(Dataset):
    """A :class:`CocoDetection` split through the train (``augment``) or eval transform.

    Items are transformed samples, or ``None`` when an image (of a mosaic: any of its four) is
    unreadable and the source has ``skip_bad`` (the collate drops and counts them).
    """

    def __init__(self, source: CocoDetection, image_size: int, augment: Augment | None = None):
        self.source = source
        self.image_size = image_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample | None:
        try:
            if self.augment is None:
                return self._eval_sample(index)
            indices = [index]
            if torch.rand(()) < self.augment.mosaic:
                indices += torch.randint(len(self.source), (3,)).tolist()
            samples = [self.source[i] for i in indices]
            return train_transform(samples, self.image_size, self.augment)
        except UnreadableImageError as err:
            if not self.source.skip_bad:
                raise
            log.warning("skipping sample: %s", err)
            return None

    def _eval_sample(self, index: int) -> Sample:
        sample = self.source[index]
        gt = {k: sample[k] for k in ("labels", "area", "iscrowd")}
        gt["boxes"] = sample["boxes"].as_subclass(torch.Tensor)
        return {**clip_boxes(letterbox(sample, self.image_size)), "gt": gt}


def collate_detection(samples: list[Sample | None], image_size: int) -> dict[str, Any]:
    """Stack a batch (format in the module docstring), dropping and counting ``None`` samples."""
    kept = [s for s in samples if s is not None]
    images = [s["image"].as_subclass(torch.Tensor) for s in kept]
    targets, meta = [], []
    for s in kept:
        crowd = s["iscrowd"].bool()
        targets.append(
            {
                "boxes": s["boxes"].as_subclass(torch.Tensor)[~crowd].float(),
                "labels": s["labels"][~crowd],
                "identities": s["identities"][~crowd],
            }
        )
        info = {k: s.get(k) for k in ("image_id", "file_name", "scale", "pad", "orig_size")}
        if "gt" in s:
            info["gt"] = s["gt"]
        meta.append(info)
    return {
        "images": torch.stack(images)
        if images
        else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
        "targets": targets,
        "meta": meta,
        "num_skipped": len(samples) - len(kept),
    }


class DetectionDataModule(LightningDataModule):
    """Train / val / test loaders over COCO-format splits; subclasses say where the files are.

    ``num_classes`` is checked against the annotation files in :meth:`setup`. ``num_skipped``
    maps each split to the images and annotations its validation left out (``skip_bad``).
    """

    def __init__(
        self,
        name: str,
        root: str | None,
        num_classes: int,
        image_size: int = 256,
        batch_size: int = 32,
        num_workers: int = 2,
        skip_bad: bool = False,
        augment: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.name = name
        self.root = Path(root).expanduser() if root is not None else None
        self.num_classes = num_classes
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.skip_bad = skip_bad
        self.augment = Augment(**(augment or {}))
        self.class_names: list[str] | None = None
        self.category_ids: list[int] | None = None
        self.num_skipped: dict[str, int] = {}
        self._splits: dict[str, CocoDetection] = {}

    def split_files(self, split: str) -> tuple[Path, Path] | None:
        """``(image_dir, ann_file)`` of ``split``, or ``None`` when the split does not exist."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in needed.get(stage, ("train", "val", "test")):
            if split not in self._splits:
                self._splits[split] = self._read(split)

    def _read(self, split: str) -> CocoDetection:
        files = self.split_files(split)
        if files is None:
            if split == "test":  # no test split: test on val
                return self._splits["val"] if "val" in self._splits else self._read("val")
            raise FileNotFoundError(f"{self.name}: no {split} split under {self.root}")
        image_dir, ann_file = files
        dataset = CocoDetection(ann_file, image_dir, skip_bad=self.skip_bad)
        if dataset.num_classes != self.num_classes:
            raise ValueError(
                f"{ann_file} has {dataset.num_classes} categories but data.num_classes is "
                f"{self.num_classes}: set data.num_classes={dataset.num_classes}"
            )
        if self.category_ids is not None and dataset.category_ids != self.category_ids:
            raise ValueError(f"{ann_file}: categories differ from the other splits'")
        self.category_ids, self.class_names = dataset.category_ids, dataset.class_names
        self.num_skipped[split] = dataset.num_skipped
        return dataset

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.augment)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _loader(self, split: str, augment: Augment | None = None) -> DataLoader:
        if split not in self._splits:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return DataLoader(
            DetectionDataset(self._splits[split], self.image_size, augment),
            batch_size=self.batch_size,
            shuffle=augment is not None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=functools.partial(collate_detection, image_size=self.image_size),
        )


class CocoDataModule(DetectionDataModule):
    """COCO 2017 layout under ``root``: ``{train,val}2017/`` and ``annotations/``.

    A test split is used when ``test2017/`` and ``annotations/instances_test2017.json`` exist.
    """

    def split_files(self, split: str) -> tuple[Path, Path] | None:
        if self.root is None:
            raise ValueError("data.root is required for COCO: the folder with train2017/ etc.")
        image_dir = self.root / f"{split}2017"
        ann_file = self.root / "annotations" / f"instances_{split}2017.json"
        if split == "test" and not (image_dir.is_dir() and ann_file.is_file()):
            return None
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO {split} images not found: {image_dir}")
        return image_dir, ann_file


class ShapesDataModule(DetectionDataModule):
    """The generated ``shapes`` dataset (see :mod:`yolor_lightning.data.shapes`).

    ``root`` is the cache root (``None``: ``$YOLOR_LIGHTNING_CACHE`` or
    ``~/.cache/yolor_lightning``); ``shapes`` holds the :class:`ShapesConfig` fields.
    Class names and category ids are known from construction.
    """

    def __init__(self, *args: Any, shapes: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.num_classes != len(CATEGORIES):
            raise ValueError(
                f"shapes has {len(CATEGORIES)} categories {CATEGORIES} but data.num_classes is "
                f"{self.num_classes}: set data.num_classes={len(CATEGORIES)}"
            )
        self.shapes = ShapesConfig(**(shapes or {}))
        self.root = self.root or default_cache_root()
        self.class_names = list(CATEGORIES)
        self.category_ids = list(range(1, len(CATEGORIES) + 1))

    def prepare_data(self) -> None:
        ensure_shapes(self.root, self.shapes)

    def split_files(self, split: str) -> tuple[Path, Path] | None:
        if split == "test":
            return None
        folder = ensure_shapes(self.root, self.shapes)
        return folder / split, folder / "annotations" / f"instances_{split}.json"

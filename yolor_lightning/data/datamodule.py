"""DataModules for COCO-format data: real COCO and the generated ``shapes`` set.

One set of annotations serves any subset of three targets (``targets``, set by ``task``): ``det``
(boxes and labels), ``cls`` (which categories an image contains) and ``emb`` (per-object
identities). Batches (see :func:`collate_batch`) are::

    {"images": uint8 [B, 3, S, S],
     "targets": [{"boxes": float32 [n, 4] xyxy input pixels, "labels": int64 [n],
                  "identities": int64 [n]}, ...],      # identities: emb only; crowd excluded
     "image_labels": float32 [B, nc],                  # cls only: multi-hot categories present
     "meta": [{"image_id", "file_name", "scale", "pad", "orig_size", "tiles", "gt"}, ...],
     "num_skipped": int,                                # unreadable samples dropped
     "skipped": [SkippedSample, ...]}                   # why: reason and image id

Boxes are always served: ``emb`` reads each object's embedding at the cells its box is assigned
to, and augmentation moves the boxes even when only ``cls`` is trained. ``identities`` are the
annotations' ``identity_key`` values (``track_id``; the category where absent). ``scale``,
``pad`` and ``orig_size`` are ``None`` for mosaic samples; ``gt`` (all original annotations in
original pixels: boxes, labels, area, iscrowd) is only in val/test batches; ``tiles`` (the
image ids a sample is made of: its own, then its mosaic partners, then the four of the mosaic it
was mixed up with, if it was) only in training batches.

The training order and augmentations come from the run's ``seed`` alone (see
:mod:`yolor_lightning.data.sampling`): the same seed serves the same batches to every
configuration. ``sampler`` picks the order: ``shuffle`` (every image once per epoch) or ``pk``
(batches of ``pk.identities`` identities x ``pk.instances`` images holding each, for the emb
task's batch-hard triplet).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from yolor_lightning.data.coco import CocoDetection, UnreadableImageError
from yolor_lightning.data.replay import ReplayedBatches, image_bytes
from yolor_lightning.data.sampling import PKBatch, SampleKey, SeededSampler, make_train_sampler
from yolor_lightning.data.shapes import CATEGORIES, ShapesConfig, default_cache_root, ensure_shapes
from yolor_lightning.data.skipping import SkipCount, SkippedSample
from yolor_lightning.data.transfer import packed_in_workers
from yolor_lightning.data.transforms import (
    Augment,
    Sample,
    clip_boxes,
    letterbox,
    train_transform,
)
from yolor_lightning.seeding import torch_generator

log = logging.getLogger(__name__)


class DetectionDataset(Dataset):
    """A :class:`CocoDetection` split through the train (``augment``) or eval transform.

    Training items are indexed with a :class:`SampleKey` (from :class:`SeededSampler`): the
    mosaic partners and every augmentation draw come from a generator seeded with its ``seed``.
    Eval items are indexed with an int. Items are transformed samples, or a
    :class:`SkippedSample` when an image (of a mosaic: any of its four; of a mixup: any of its
    eight) is unusable and the source has ``skip_bad`` (the collate drops them, the DataModule
    counts them). A training sample's ``tiles`` lists the image ids it is made of.
    """

    def __init__(self, source: CocoDetection, image_size: int, augment: Augment | None = None):
        self.source = source
        self.image_size = image_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | SampleKey) -> Sample | SkippedSample:
        try:
            if self.augment is None:
                return self._eval_sample(key)
            return self._train_sample(*key)
        except UnreadableImageError as err:
            if not self.source.skip_bad:
                raise
            log.warning("skipping sample: %s", err)
            return SkippedSample(err.reason, err.image_id)

    def _train_sample(self, index: int, seed: int) -> Sample:
        """The sample's mosaic and augmentations draw from ``seed``'s generator; its mixup (the
        decision, the four images of the other mosaic, its layout, the ratio) from the stream
        ``(seed, "mixup")``, so that a mixup leaves the sample's other draws as they are."""
        generator = torch.Generator().manual_seed(seed)
        indices = [index]
        if torch.rand((), generator=generator) < self.augment.mosaic:
            indices += torch.randint(len(self.source), (3,), generator=generator).tolist()
        samples = [self.source[i] for i in indices]
        mixing = torch_generator(seed, "mixup")
        partners = []
        if len(samples) == 4 and torch.rand((), generator=mixing) < self.augment.mixup:
            partners = [
                self.source[i]
                for i in torch.randint(len(self.source), (4,), generator=mixing).tolist()
            ]
        sample = train_transform(
            samples, self.image_size, self.augment, generator, partners, mixing
        )
        return {**sample, "tiles": [s["image_id"] for s in (*samples, *partners)]}

    def _eval_sample(self, index: int) -> Sample:
        sample = self.source[index]
        gt = {k: sample[k] for k in ("labels", "area", "iscrowd")}
        gt["boxes"] = sample["boxes"].as_subclass(torch.Tensor)
        return {**clip_boxes(letterbox(sample, self.image_size)), "gt": gt}


TARGETS = ("det", "cls", "emb")
"""What a DataModule can serve from COCO annotations (``targets``: the config's
``task.targets``)."""


def check_targets(targets: Sequence[str]) -> tuple[str, ...]:
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(
            f"targets={list(targets)} (task.targets) is invalid: a non-empty subset of "
            f"{list(TARGETS)}"
        )
    return tuple(targets)


def collate_batch(
    samples: list[Sample | SkippedSample],
    image_size: int,
    num_classes: int,
    targets: Sequence[str] = ("det",),
) -> dict[str, Any]:
    """Stack a batch (format in the module docstring), dropping :class:`SkippedSample` items."""
    skipped = [s for s in samples if isinstance(s, SkippedSample)]
    kept = [s for s in samples if not isinstance(s, SkippedSample)]
    images = [s["image"].as_subclass(torch.Tensor) for s in kept]
    boxes, meta = [], []
    for s in kept:
        crowd = s["iscrowd"].bool()
        target = {
            "boxes": s["boxes"].as_subclass(torch.Tensor)[~crowd].float(),
            "labels": s["labels"][~crowd],
        }
        if "emb" in targets:
            target["identities"] = s["identities"][~crowd]
        boxes.append(target)
        info = {
            k: s.get(k) for k in ("image_id", "file_name", "scale", "pad", "orig_size", "tiles")
        }
        if "gt" in s and "det" in targets:
            info["gt"] = s["gt"]
        meta.append(info)
    batch = {
        "images": torch.stack(images)
        if images
        else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
        "targets": boxes,
        "meta": meta,
        "num_skipped": len(skipped),
        "skipped": skipped,
    }
    if "cls" in targets:  # crowd regions count: the category is in the image
        batch["image_labels"] = torch.zeros(len(kept), num_classes)
        for row, s in enumerate(kept):
            batch["image_labels"][row, s["labels"]] = 1.0
    return batch


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """In a distributed run, this rank's share of an evaluation split: every image on exactly
    one rank. ``None`` (in order) in a single process.

    Lightning would give each rank a ``DistributedSampler``, which pads the split with repeated
    images so that all ranks get as many; gathered from all ranks, a repeated image would count
    twice in the COCO stats.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return UnrepeatedDistributedSampler(dataset, shuffle=False)
    return None


class DetectionDataModule(LightningDataModule):
    """Train / val / test loaders over COCO-format splits; subclasses say where the files are.

    ``num_classes`` is checked against the annotation files in :meth:`setup`. ``skipped`` maps
    each split to what ``skip_bad`` left out, by reason: by its annotation checks, and images
    found unusable in the batches loaded so far (``num_skipped``: the totals per split).
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
        targets: Sequence[str] = ("det",),
        identity_key: str = "track_id",
        sampler: str = "shuffle",
        pk: Mapping[str, int] | None = None,
        val_cache_mb: float = 1024,
        seed: int = 0,
    ):
        super().__init__()
        # data.sampler arrives as the config schema's Enum member: its name is what checkpoints
        # keep (they hold plain data only, yolor_lightning/checkpoints.py)
        self.sampler = getattr(sampler, "name", sampler)
        self.save_hyperparameters(ignore=["sampler"])
        self.hparams["sampler"] = self.sampler
        self.seed = seed
        self.targets = check_targets(targets)
        self.identity_key = identity_key
        self.name = name
        self.root = Path(root).expanduser() if root is not None else None
        self.num_classes = num_classes
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_cache_mb = val_cache_mb
        self.skip_bad = skip_bad
        self.augment = Augment(**(augment or {}))
        self.pk = PKBatch(**(pk or {}))
        if self.sampler == "pk":
            self._check_pk()
        self.class_names: list[str] | None = None
        self.category_ids: list[int] | None = None
        self.skip_count = SkipCount()
        self._splits: dict[str, CocoDetection] = {}
        self._replayed_val: ReplayedBatches | None = None

    def _check_pk(self) -> None:
        """A P x K batch is one whole group of the identity-balanced order, over emb identities."""
        if "emb" not in self.targets:
            raise ValueError(
                f"data.sampler=pk balances the identities of the emb task, but task.targets="
                f"{list(self.targets)} has no emb: use task=jde or data.sampler=shuffle"
            )
        p, k = self.pk.identities, self.pk.instances
        if p * k != self.batch_size:
            raise ValueError(
                f"data.pk.identities={p} x data.pk.instances={k} = {p * k} is invalid with "
                f"data.batch_size={self.batch_size}: a batch is P identities x K images, so "
                "their product must equal data.batch_size"
            )

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
        dataset = CocoDetection(
            ann_file,
            image_dir,
            skip_bad=self.skip_bad,
            identity_key=self.identity_key if "emb" in self.targets else None,
        )
        if dataset.num_classes != self.num_classes:
            raise ValueError(
                f"{ann_file} has {dataset.num_classes} categories but data.num_classes is "
                f"{self.num_classes}: set data.num_classes={dataset.num_classes}"
            )
        if self.category_ids is not None and dataset.category_ids != self.category_ids:
            raise ValueError(f"{ann_file}: categories differ from the other splits'")
        self.category_ids, self.class_names = dataset.category_ids, dataset.class_names
        self.skip_count.add_split(split, dataset)
        return dataset

    @property
    def skipped(self) -> dict[str, dict[str, int]]:
        return self.skip_count.as_dict()

    @property
    def num_skipped(self) -> dict[str, int]:
        return {split: sum(reasons.values()) for split, reasons in self.skipped.items()}

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict:
        """Count the samples the batch dropped (the loader's workers cannot count for us)."""
        if batch["skipped"]:
            split = "train" if self.trainer.training else "test" if self.trainer.testing else "val"
            self.skip_count.add_batch(split, batch["skipped"])
        return batch

    @property
    def num_identities(self) -> int:
        """Identities an identity classifier must tell apart: the training split's largest
        identity + 1 (identities are used as class indices; unused ones cost a row each)."""
        self.setup("fit")
        return self._splits["train"].largest_identity + 1

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.augment)

    def val_dataloader(self) -> DataLoader | ReplayedBatches:
        """The validation split, loaded once in the background from this call on and replayed
        from memory where its images fit ``data.val_cache_mb`` (``data/replay.py``); its
        workers exit once it is loaded."""
        if self._replayed_val is not None:
            return self._replayed_val
        if "val" not in self._splits:
            self.setup("validate")
        size = image_bytes(len(self._splits["val"]), self.image_size)
        if size > self.val_cache_mb * 2**20:
            return self._loader("val")
        self._replayed_val = ReplayedBatches(self._loader("val", persistent=False))
        return self._replayed_val

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _loader(
        self, split: str, augment: Augment | None = None, persistent: bool = True
    ) -> DataLoader:
        if split not in self._splits:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        dataset = DetectionDataset(self._splits[split], self.image_size, augment)
        training = augment is not None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self._train_sampler(dataset) if training else evaluation_sampler(dataset),
            # workers' own seeds are drawn from this, not from the global RNG (they are unused:
            # every draw comes from the sample's key)
            generator=torch_generator(self.seed, "loader", split),
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=functools.partial(
                packed_in_workers,
                collate=functools.partial(
                    collate_batch,
                    image_size=self.image_size,
                    num_classes=self.num_classes,
                    targets=self.targets,
                ),
            ),
        )

    def _train_sampler(self, dataset: DetectionDataset) -> SeededSampler:
        """``data.sampler``: every image once per epoch, or P x K identity groups (``pk``)."""
        return make_train_sampler(
            self.sampler, dataset, self.seed, dataset.source.identity_images, self.pk
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

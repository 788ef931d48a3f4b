"""COCO-format instances reader, validated up front.

:class:`CocoDetection` reads an instances JSON with pycocotools, checks every image and annotation
before training starts, and serves one image with its annotations per item. Category ids (sorted)
map to contiguous labels ``0..nc-1``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file

log = logging.getLogger(__name__)

# How far (px) a box may reach past the image border before it counts as outside.
BOX_TOLERANCE = 1.0
# Per-box fields of a sample besides ``boxes``; transforms filter them together with the boxes.
BOX_FIELDS = ("labels", "iscrowd", "area", "identities")


class CocoFormatError(ValueError):
    """An annotation file that cannot be used as is: names the file (and annotation)."""


class UnreadableImageError(RuntimeError):
    """An image file that exists but cannot be decoded."""


class CocoDetection(Dataset):
    """One COCO-format split: images under ``image_dir``, annotations in ``ann_file``.

    Items are dicts: ``image`` (uint8 ``tv_tensors.Image`` [3, H, W]), ``boxes`` (xyxy
    ``tv_tensors.BoundingBoxes``), per box ``labels`` / ``iscrowd`` / ``area`` / ``identities``,
    ``image_id`` and ``file_name``.

    ``identities`` are the values of the annotation field ``identity_key`` (MOT-style files:
    ``track_id``); an annotation without it, or every annotation when ``identity_key`` is
    ``None``, gets its label instead. A file with annotations lacking the field says so once.

    With ``skip_bad`` images that are missing and annotations that are invalid are left out and
    counted in :attr:`skipped` (by reason) instead of raising.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        skip_bad: bool = False,
        identity_key: str | None = None,
    ):
        self.ann_file = Path(ann_file)
        self.identity_key = identity_key
        self.image_dir = Path(image_dir)
        self.skip_bad = skip_bad
        self.skipped: Counter[str] = Counter()
        coco = _load(self.ann_file)
        self.category_ids = sorted(coco.cats)
        self.class_names = [coco.cats[c]["name"] for c in self.category_ids]
        self._label = {c: i for i, c in enumerate(self.category_ids)}
        self._images = []  # (image_id, file_name, first annotation row, end row)
        kept: list[dict] = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            if not (self.image_dir / info["file_name"]).is_file():
                self._reject(
                    "missing_image", f"image file {self.image_dir / info['file_name']} not found"
                )
                continue
            start = len(kept)
            kept += [a for a in coco.imgToAnns.get(image_id, []) if self._valid(a, info)]
            self._images.append((image_id, info["file_name"], start, len(kept)))
        for ann in coco.dataset["annotations"]:
            if ann.get("image_id") not in coco.imgs:
                where = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
                self._reject("unknown_image", f"{where}: unknown image_id")
        # One tensor per field for the whole split (not per image): cheap to share with workers.
        self._rows = self._annotation_rows(kept)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def largest_identity(self) -> int:
        """The largest identity of the split (-1 when it has no annotations)."""
        identities = self._rows["identities"]
        return int(identities.max()) if identities.numel() else -1

    @property
    def num_skipped(self) -> int:
        """Images and annotations left out by validation (``skip_bad``)."""
        return sum(self.skipped.values())

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, file_name, start, end = self._images[index]
        path = self.image_dir / file_name
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            raise UnreadableImageError(f"cannot decode image {path}: {err}") from err
        rows = {k: v[start:end].clone() for k, v in self._rows.items()}
        return {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(
                rows.pop("boxes"), format="XYXY", canvas_size=tuple(image.shape[-2:])
            ),
            **rows,
            "image_id": image_id,
            "file_name": file_name,
        }

    def _annotation_rows(self, anns: list[dict]) -> dict[str, torch.Tensor]:
        """Per-box tensors: xyxy boxes and the fields that follow each box through transforms."""
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = [self._label[a["category_id"]] for a in anns]
        key = self.identity_key
        identities = [a.get(key, lab) if key else lab for a, lab in zip(anns, labels, strict=True)]
        lacking = sum(key not in a for a in anns) if key else 0
        if lacking:
            log.warning(
                "%s: %d of %d annotations have no %r field (data.identity_key): their emb "
                "identity falls back to their category",
                self.ann_file,
                lacking,
                len(anns),
                key,
            )
        return {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64),
            "area": torch.tensor([a.get("area", 0.0) for a in anns], dtype=torch.float32),
            "identities": torch.tensor(identities, dtype=torch.int64),
        }

    def _valid(self, ann: dict, image: dict) -> bool:
        where = f"annotation {ann.get('id')} (image {image['id']})"
        if ann.get("category_id") not in self._label:
            return self._reject(
                "unknown_category",
                f"{where}: unknown category_id {ann.get('category_id')}, "
                f"known: {self.category_ids}",
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            return self._reject("bad_box", f"{where}: bbox {bbox!r} is not [x, y, w, h]")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            return self._reject("bad_box", f"{where}: bbox {bbox} has non-positive width/height")
        W, H, tol = image["width"], image["height"], BOX_TOLERANCE
        if x < -tol or y < -tol or x + w > W + tol or y + h > H + tol:
            return self._reject("bad_box", f"{where}: bbox {bbox} lies outside the {W}x{H} image")
        return True

    def _reject(self, reason: str, what: str) -> bool:
        if not self.skip_bad:
            raise CocoFormatError(f"{self.ann_file}: {what}")
        self.skipped[reason] += 1
        log.warning("skipping %s: %s", reason, what)
        return False


def _load(ann_file: Path) -> COCO:
    """Parse ``ann_file`` with errors that name the file and the position of a JSON error."""
    try:
        dataset = json.loads(ann_file.read_text())
    except FileNotFoundError:
        raise CocoFormatError(f"{ann_file}: annotation file not found") from None
    except json.JSONDecodeError as err:
        raise CocoFormatError(
            f"{ann_file}: malformed JSON at line {err.lineno} column {err.colno} "
            f"(char {err.pos}): {err.msg}"
        ) from err
    missing = [k for k in ("images", "annotations", "categories") if k not in dataset]
    if missing:
        raise CocoFormatError(f"{ann_file}: not a COCO instances file, missing keys {missing}")
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (KeyError, TypeError) as err:
        raise CocoFormatError(f"{ann_file}: an entry lacks a required field: {err!r}") from err
    return coco

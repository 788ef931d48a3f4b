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
import math
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

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
    """An image that cannot be used as read: it does not decode (``reason``
    ``unreadable_image``) or its size is not the annotation file's (``image_size_mismatch``)."""

    def __init__(self, message: str, reason: str = "unreadable_image", image_id: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.image_id = image_id


class _Image(NamedTuple):
    """A kept image: its entry's fields and its annotations' rows ``[start, end)``."""

    image_id: int
    file_name: str
    height: int
    width: int
    start: int
    end: int


class CocoDetection(Dataset):
    """One COCO-format split: images under ``image_dir``, annotations in ``ann_file``.

    Items are dicts: ``image`` (uint8 ``tv_tensors.Image`` [3, H, W]), ``boxes`` (xyxy
    ``tv_tensors.BoundingBoxes``), per box ``labels`` / ``iscrowd`` / ``area`` / ``identities``,
    ``image_id`` and ``file_name``.

    ``identities`` are the values of the annotation field ``identity_key`` (MOT-style files:
    ``track_id``); an annotation without it, or every annotation when ``identity_key`` is
    ``None``, gets its label instead. A file with annotations lacking the field says so once.

    Every image entry and annotation is checked before training: an image needs an integer id
    used once, a relative ``file_name`` inside ``image_dir`` that exists, and a positive integer
    ``width`` and ``height`` (checked against the decoded image when it is read); an annotation a
    known category and a finite ``[x, y, w, h]`` box of positive size inside its image. A bad one
    raises :class:`CocoFormatError` naming the file and the image or annotation id. With
    ``skip_bad`` it is left out and counted in :attr:`skipped` by reason instead (an image's
    annotations go with it); a split left without images raises all the same.
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
        dataset = _read_json(self.ann_file)
        dropped: set[int] = set()  # ids of skipped images: their annotations go with them
        dataset["images"] = self._valid_images(dataset["images"], dropped)
        coco = _index(self.ann_file, dataset)
        self.category_ids = sorted(coco.cats)
        self.class_names = [coco.cats[c]["name"] for c in self.category_ids]
        self._label = {c: i for i, c in enumerate(self.category_ids)}
        self._images: list[_Image] = []
        kept: list[dict] = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            if not (self.image_dir / info["file_name"]).is_file():
                path = self.image_dir / info["file_name"]
                self._reject("missing_image", f"image {image_id}: image file {path} not found")
                continue
            start = len(kept)
            kept += [a for a in coco.imgToAnns.get(image_id, []) if self._valid(a, info)]
            entry = (image_id, info["file_name"], int(info["height"]), int(info["width"]))
            self._images.append(_Image(*entry, start, len(kept)))
        for ann in coco.dataset["annotations"]:
            if ann.get("image_id") not in coco.imgs and ann.get("image_id") not in dropped:
                where = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
                self._reject("unknown_image", f"{where}: unknown image_id")
        if not self._images:
            raise CocoFormatError(
                f"{self.ann_file}: no usable image left (skipped by reason: {dict(self.skipped)})"
            )
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

    def identity_images(self) -> dict[int, list[int]]:
        """Identity -> the indices of the images holding a non-crowd object of it, in order
        (crowd regions get no embedding: the collate drops them from the emb targets)."""
        images: defaultdict[int, list[int]] = defaultdict(list)
        identities, crowd = self._rows["identities"], self._rows["iscrowd"].bool()
        for index, entry in enumerate(self._images):
            rows = slice(entry.start, entry.end)
            for identity in sorted(set(identities[rows][~crowd[rows]].tolist())):
                images[identity].append(index)
        return dict(images)

    @property
    def num_skipped(self) -> int:
        """Images and annotations left out by validation (``skip_bad``)."""
        return sum(self.skipped.values())

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, file_name, height, width, start, end = self._images[index]
        path = self.image_dir / file_name
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            raise UnreadableImageError(
                f"{self.ann_file}: image {image_id}: cannot decode {path}: {err}",
                image_id=image_id,
            ) from err
        if tuple(image.shape[-2:]) != (height, width):
            raise UnreadableImageError(
                f"{self.ann_file}: image {image_id}: {path} is {image.shape[-1]}x"
                f"{image.shape[-2]} but the annotation file says {width}x{height}",
                reason="image_size_mismatch",
                image_id=image_id,
            )
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

    def _valid_images(self, images: list, dropped: set[int]) -> list[dict]:
        """The image entries that pass :func:`_image_problem`, each id once: two entries with
        one id are both left out (which of them would its annotations belong to?). Ids of
        left-out entries are added to ``dropped``."""
        by_id: defaultdict[int, list[dict]] = defaultdict(list)
        for entry in images:
            image_id = entry.get("id") if isinstance(entry, dict) else None
            if _is_integer(image_id):
                by_id[int(image_id)].append(entry)
            else:
                self._reject("bad_image", f"image entry {str(entry)[:80]} has no integer id")
        kept = []
        for image_id, entries in by_id.items():
            if len(entries) > 1:
                names = ", ".join(repr(e.get("file_name")) for e in entries)
                what = f"image id {image_id} is used by {len(entries)} images ({names})"
                self._reject("duplicate_image_id", what, count=len(entries))
            elif problem := _image_problem(entries[0]):
                self._reject(problem[0], f"image {image_id}: {problem[1]}")
            else:
                kept.append(entries[0])
                continue
            dropped.add(image_id)
        return kept

    def _valid(self, ann: dict, image: dict) -> bool:
        where = f"annotation {ann.get('id')} (image {image['id']})"
        if ann.get("category_id") not in self._label:
            return self._reject(
                "unknown_category",
                f"{where}: unknown category_id {ann.get('category_id')}, "
                f"known: {self.category_ids}",
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            return self._reject("bad_box", f"{where}: bbox {bbox!r} is not [x, y, w, h] numbers")
        if not all(map(math.isfinite, bbox)):
            return self._reject("bad_box", f"{where}: bbox {bbox} is not finite")
        for key in ("iscrowd", "area"):
            if key in ann and not (_is_number(ann[key]) and math.isfinite(ann[key])):
                return self._reject("bad_annotation", f"{where}: {key} {ann[key]!r} is no number")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            return self._reject("bad_box", f"{where}: bbox {bbox} has non-positive width/height")
        W, H, tol = image["width"], image["height"], BOX_TOLERANCE
        if x < -tol or y < -tol or x + w > W + tol or y + h > H + tol:
            return self._reject("bad_box", f"{where}: bbox {bbox} lies outside the {W}x{H} image")
        return True

    def _reject(self, reason: str, what: str, count: int = 1) -> bool:
        """Raise naming the file, or with ``skip_bad`` count ``count`` items under ``reason``."""
        if not self.skip_bad:
            raise CocoFormatError(f"{self.ann_file}: {what}")
        self.skipped[reason] += count
        log.warning("skipping %s: %s: %s", reason, self.ann_file, what)
        return False


def _is_number(value: object) -> bool:
    """An int or a float, not a bool (``True`` is an int to Python, not a size to us)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    """A number with an integer value (``640`` or ``640.0``)."""
    return _is_number(value) and math.isfinite(value) and value == int(value)


def _image_problem(entry: dict) -> tuple[str, str] | None:
    """``(reason, what)`` when an image entry is unusable: its ``file_name`` is not a relative
    path inside the image folder (absolute, or with a ``..`` part: it would read files outside
    it), or its ``width`` / ``height`` is not a positive integer."""
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        return "bad_image", f"file_name {name!r} is not a file name"
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return "unsafe_file_name", (
            f"file_name {name!r} is absolute or has a '..' part: it must be a path relative to "
            "the image folder, inside it"
        )
    for key in ("width", "height"):
        value = entry.get(key)
        if not (_is_integer(value) and value > 0):
            missing = key not in entry
            return "bad_image", (
                f"no {key}" if missing else f"{key} {value!r} is not a positive integer"
            )
    return None


def _read_json(ann_file: Path) -> dict[str, Any]:
    """Parse ``ann_file`` with errors that name the file and the position of a JSON error."""
    try:
        dataset = json.loads(ann_file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CocoFormatError(f"{ann_file}: annotation file not found") from None
    except UnicodeDecodeError as err:
        raise CocoFormatError(
            f"{ann_file}: not UTF-8 text (byte {err.object[err.start]:#04x} at position "
            f"{err.start}): JSON annotation files must be UTF-8"
        ) from None
    except json.JSONDecodeError as err:
        raise CocoFormatError(
            f"{ann_file}: malformed JSON at line {err.lineno} column {err.colno} "
            f"(char {err.pos}): {err.msg}"
        ) from err
    keys = ("images", "annotations", "categories")
    if not isinstance(dataset, dict) or any(not isinstance(dataset.get(k), list) for k in keys):
        raise CocoFormatError(f"{ann_file}: not a COCO instances file: needs the lists {keys}")
    return dataset


def _index(ann_file: Path, dataset: dict[str, Any]) -> COCO:
    """pycocotools' index of ``dataset``; an entry without a field it needs names the file."""
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (KeyError, TypeError) as err:
        raise CocoFormatError(f"{ann_file}: an entry lacks a required field: {err!r}") from err
    return coco

"""Box-aware detection transforms on samples from :class:`~yolor_lightning.data.coco.CocoDetection`.

A sample is a dict with ``image`` (uint8 ``tv_tensors.Image``), ``boxes`` (xyxy
``tv_tensors.BoundingBoxes``) and the per-box fields in :data:`BOX_FIELDS`. Geometry goes through
``torchvision.transforms.v2.functional`` so boxes follow the image; images stay uint8 throughout.
Every random draw comes from the ``generator`` passed in (one per sample, see
:class:`~yolor_lightning.data.sampling.SeededSampler`), never from torch's global generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from yolor_lightning.data.coco import BOX_FIELDS

PAD_VALUE = 114
MIN_BOX_SIZE = 2.0  # px, boxes thinner than this after a crop are dropped
MIN_VISIBLE_FRACTION = 0.25  # of a box's area, else the crop left too little of the object
MIXUP_BETA = 8  # the mixup ratio is Beta(8, 8), as YOLOR's (np.random.beta(8.0, 8.0))

Sample = dict[str, Any]

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class Augment:
    """Training augmentation; the field names are the ``augment:`` config keys.

    ``mosaic``, ``mixup`` and ``flip_lr`` are probabilities (``mixup``: of blending a mosaic with
    a second one, :func:`mixup`). ``hsv_h`` is the largest hue shift (fraction of the hue
    circle), ``hsv_s`` / ``hsv_v`` the largest relative saturation / value change.
    """

    mosaic: float = 1.0
    mixup: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    flip_lr: float = 0.5

    @classmethod
    def from_config(cls, config: Any) -> Augment:
        """Build from a mapping (e.g. a Hydra ``DictConfig``), naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown augment keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**config)


def letterbox(sample: Sample, size: int) -> Sample:
    """Resize keeping the aspect ratio so the long side is ``size``, pad to square with grey.

    Adds ``scale`` (the resize ratio), ``pad`` (left, top) and ``orig_size`` (h, w).
    """
    h, w = sample["image"].shape[-2:]
    image, boxes, scale = _resize_long_side(sample["image"], sample["boxes"], size)
    new_h, new_w = image.shape[-2:]
    left, top = (size - new_w) // 2, (size - new_h) // 2
    padding = [left, top, size - new_w - left, size - new_h - top]
    return {
        **sample,
        "image": F.pad(image, padding, fill=PAD_VALUE),
        "boxes": F.pad(boxes, padding),
        "scale": scale,
        "pad": (float(left), float(top)),
        "orig_size": (h, w),
    }


def letterbox_to_original(
    boxes: torch.Tensor, scale: float, pad: Sequence[float], orig_size: Sequence[int]
) -> torch.Tensor:
    """Map xyxy boxes from the letterboxed image back to the original image, clipped to it."""
    pad_x, pad_y = pad
    out = (boxes - boxes.new_tensor([pad_x, pad_y, pad_x, pad_y])) / scale
    h, w = orig_size
    return torch.minimum(out.clamp(min=0), out.new_tensor([w, h, w, h]))


def mosaic(samples: Sequence[Sample], size: int, generator: torch.Generator) -> Sample:
    """Four samples around a random centre of a ``size`` x ``size`` canvas (YOLOv4 mosaic).

    Each image is scaled as :func:`letterbox` would and placed in one quadrant touching the
    centre; this is the usual 2S x 2S mosaic cropped to its middle S x S, built directly.
    Boxes are clipped to the canvas and dropped when too little of them is left.
    The result carries the first sample's ``image_id`` and ``file_name``.
    """
    canvas = torch.full((3, size, size), PAD_VALUE, dtype=torch.uint8)
    cx, cy = (int(v) for v in torch.randint(0, size + 1, (2,), generator=generator))
    boxes, fields = [], {k: [] for k in BOX_FIELDS}
    for quadrant, sample in enumerate(samples):
        image, tile_boxes, _ = _resize_long_side(sample["image"], sample["boxes"], size)
        h, w = image.shape[-2:]
        ox = cx - w if quadrant in (0, 2) else cx
        oy = cy - h if quadrant in (0, 1) else cy
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, size), min(oy + h, size)
        if x1 <= x0 or y1 <= y0:
            continue
        canvas[:, y0:y1, x0:x1] = image[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        boxes.append(tile_boxes.as_subclass(torch.Tensor) + torch.tensor([ox, oy, ox, oy]))
        for k in BOX_FIELDS:
            fields[k].append(sample[k])
    out = {
        "image": tv_tensors.Image(canvas),
        "boxes": tv_tensors.BoundingBoxes(
            torch.cat(boxes) if boxes else torch.zeros(0, 4),
            format="XYXY",
            canvas_size=(size, size),
        ),
        **{k: torch.cat(v) if v else samples[0][k][:0] for k, v in fields.items()},
        "image_id": samples[0]["image_id"],
        "file_name": samples[0]["file_name"],
    }
    return clip_boxes(out)


def mixup_ratio(generator: torch.Generator) -> float:
    """A draw of Beta(``MIXUP_BETA``, ``MIXUP_BETA``) from ``generator``: the middle one of
    ``2 * MIXUP_BETA - 1`` uniform draws (the k-th smallest of n uniforms is Beta(k, n + 1 - k);
    torch's Beta sampler takes no generator)."""
    draws = torch.rand(2 * MIXUP_BETA - 1, generator=generator, dtype=torch.float64)
    return draws.sort().values[MIXUP_BETA - 1].item()


def mixup(sample: Sample, other: Sample, ratio: float) -> Sample:
    """MixUp (Zhang et al. 2018) of two samples of one size, as YOLOR mixes two mosaics: pixels
    ``ratio * a + (1 - ratio) * b`` rounded to uint8, the boxes (where they are) and per-box
    fields of both; the first sample's ``image_id`` and ``file_name``."""
    image, other_image = sample["image"], other["image"]
    if image.shape != other_image.shape:
        shapes = f"{list(image.shape)} and {list(other_image.shape)}"
        raise ValueError(f"mixup needs two images of one size, got {shapes}")
    pixels = image.float() * ratio + other_image.float() * (1 - ratio)
    boxes = torch.cat([sample["boxes"].as_subclass(torch.Tensor), other["boxes"]])
    return {
        **sample,
        "image": tv_tensors.wrap(pixels.add_(0.5).to(torch.uint8), like=image),
        "boxes": tv_tensors.wrap(boxes, like=sample["boxes"]),
        **{k: torch.cat([sample[k], other[k]]) for k in BOX_FIELDS},
    }


def clip_boxes(sample: Sample) -> Sample:
    """Clip boxes to the image; drop those under ``MIN_BOX_SIZE`` or mostly cut away."""
    boxes = sample["boxes"]
    clipped = F.clamp_bounding_boxes(boxes, clamping_mode="hard")
    wh, clipped_wh = boxes[:, 2:] - boxes[:, :2], clipped[:, 2:] - clipped[:, :2]
    keep = (clipped_wh >= MIN_BOX_SIZE).all(1) & (
        clipped_wh.prod(1) >= MIN_VISIBLE_FRACTION * wh.prod(1)
    )
    return {
        **sample,
        "boxes": tv_tensors.wrap(clipped[keep], like=boxes),
        **{k: sample[k][keep] for k in BOX_FIELDS},
    }


def hflip(sample: Sample) -> Sample:
    """Mirror image and boxes left-right."""
    return {
        **sample,
        "image": F.horizontal_flip(sample["image"]),
        "boxes": F.horizontal_flip(sample["boxes"]),
    }


def hsv_jitter(
    image: torch.Tensor, h_gain: float, s_gain: float, v_gain: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate hue by up to ``h_gain`` of the circle, scale saturation and value by 1 ± gain.

    All three are linear in YIQ space (hue: rotation of the IQ chroma plane, saturation: its
    scale, value: overall scale), so one 3x3 matrix per image does the whole jitter: ~0.4 ms on
    a 256² image against ~7 ms for torchvision's ``adjust_hue`` / ``adjust_saturation`` /
    ``adjust_brightness`` (which round-trip through float HSV), and ~5 ms for PIL's HSV.
    """
    dh, ds, dv = (torch.rand(3, generator=generator) * 2 - 1).tolist()
    angle = 2 * math.pi * dh * h_gain
    cos, sin, sat = math.cos(angle), math.sin(angle), 1 + ds * s_gain
    chroma = torch.tensor([[1.0, 0, 0], [0, sat * cos, -sat * sin], [0, sat * sin, sat * cos]])
    matrix = (1 + dv * v_gain) * (_YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ)
    pixels = (matrix @ image.reshape(3, -1).float()).add_(0.5).clamp_(0, 255)
    return tv_tensors.wrap(pixels.to(torch.uint8).reshape(image.shape), like=image)


def train_transform(
    samples: Sequence[Sample],
    size: int,
    augment: Augment,
    generator: torch.Generator,
    partners: Sequence[Sample] = (),
    mixing: torch.Generator | None = None,
) -> Sample:
    """Mosaic of four samples (or letterbox of the first one), mixed up with the mosaic of four
    ``partners`` when there are any (that mosaic's layout and the ratio drawn from ``mixing``),
    then HSV jitter and flip; every other random draw from ``generator``."""
    if len(samples) == 4:
        sample = mosaic(samples, size, generator)
    else:
        sample = clip_boxes(letterbox(samples[0], size))
    if partners:
        sample = mixup(sample, mosaic(partners, size, mixing), mixup_ratio(mixing))
    if augment.hsv_h or augment.hsv_s or augment.hsv_v:
        image = hsv_jitter(sample["image"], augment.hsv_h, augment.hsv_s, augment.hsv_v, generator)
        sample = {**sample, "image": image}
    if torch.rand((), generator=generator) < augment.flip_lr:
        sample = hflip(sample)
    return sample


def _resize_long_side(
    image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, size: int
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes, float]:
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new_size = [max(round(h * scale), 1), max(round(w * scale), 1)]
    if new_size == [h, w]:
        return image, boxes, scale
    return F.resize(image, new_size, antialias=True), F.resize(boxes, new_size), scale

"""From frames to detections in original pixels, as the evaluation computes them.

Each frame is letterboxed to the model's input as validation letterboxes it
(:func:`~yolor_lightning.data.transforms.letterbox`), the outputs go through the same NMS, and
the boxes are mapped back with :func:`~yolor_lightning.data.transforms.letterbox_to_original`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_convert

from yolor_lightning.data.transforms import letterbox, letterbox_to_original
from yolor_lightning.predict.models import Predictor
from yolor_lightning.predict.sources import Frame
from yolor_lightning.tasks.postprocess import non_max_suppression


@dataclass
class ImagePrediction:
    """What the model found in one frame: ``boxes`` xyxy in the frame's pixels, ``scores``,
    ``labels``; for a cls head the image's ``class_probabilities`` [nc], for an emb head each
    detection's ``embeddings`` [k, D] (L2-normalised, read at the cell that predicted it)."""

    frame: Frame
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    class_probabilities: Tensor | None = None
    embeddings: Tensor | None = None


def predict_frames(
    predictor: Predictor, frames: Iterable[Frame], batch_size: int = 8, **nms: Any
) -> Iterator[ImagePrediction]:
    """Predictions for ``frames``, ``batch_size`` at a time; ``nms`` replaces the model's NMS
    settings (e.g. ``conf_threshold=0.25``)."""
    settings = predictor.nms | {key: value for key, value in nms.items() if value is not None}
    frames = iter(frames)
    while batch := list(itertools.islice(frames, batch_size)):
        boxed = [_letterboxed(frame.image, predictor.image_size) for frame in batch]
        images = torch.stack([sample["image"].as_subclass(Tensor) for sample in boxed])
        outputs = predictor.run(images.float().div_(255))
        detections = (
            non_max_suppression(outputs["predictions"], **settings)
            if "predictions" in outputs  # a cls-only network detects nothing
            else [_NOTHING] * len(batch)
        )
        embeddings = [outputs[name] for name in sorted(outputs) if name.startswith("embeddings")]
        for index, (frame, sample, found) in enumerate(zip(batch, boxed, detections, strict=True)):
            yield ImagePrediction(
                frame,
                letterbox_to_original(
                    found["boxes"], sample["scale"], sample["pad"], sample["orig_size"]
                ),
                found["scores"],
                found["labels"],
                _row(outputs.get("class_probabilities"), index),
                _object_embeddings(embeddings, outputs["predictions"][index], found["boxes"], index)
                if embeddings
                else None,
            )


_NOTHING = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0).long()}


def _letterboxed(image: Tensor, size: int) -> dict[str, Any]:
    empty = tv_tensors.BoundingBoxes(
        torch.zeros(0, 4), format="XYXY", canvas_size=tuple(image.shape[-2:])
    )
    return letterbox({"image": tv_tensors.Image(image), "boxes": empty}, size)


def _row(values: Tensor | None, index: int) -> Tensor | None:
    return None if values is None else values[index]


def _object_embeddings(
    maps: list[Tensor], predictions: Tensor, boxes: Tensor, index: int
) -> Tensor:
    """The embedding of each detection, read at the cell of the prediction row it came from.

    NMS keeps boxes, not rows: a detection's row is the one whose box, converted as NMS converts
    it, is bit for bit the detection's. Rows run over levels, then anchors, rows, columns.
    """
    candidates = box_convert(predictions[:, :4], in_fmt="cxcywh", out_fmt="xyxy")
    rows = (candidates[None] == boxes[:, None]).all(-1).int().argmax(1)
    cells = [level.shape[-2] * level.shape[-1] for level in maps]
    anchors = predictions.shape[0] // sum(cells)
    starts = torch.tensor([0, *itertools.accumulate(anchors * c for c in cells)])
    embeddings = torch.zeros(len(boxes), maps[0].shape[1])
    for object_index, row in enumerate(rows.tolist()):
        level = int(torch.searchsorted(starts, row, right=True)) - 1
        height, width = maps[level].shape[-2:]
        cell = (row - int(starts[level])) % (height * width)
        embeddings[object_index] = maps[level][index, :, cell // width, cell % width]
    return embeddings

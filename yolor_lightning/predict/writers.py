"""What predict writes into ``out``: each frame with its boxes drawn (``<name>.jpg``), the
detections as a COCO-format file (``predictions.json``), and for cls / emb heads the class
probabilities and per-object embeddings (``predictions.npz``).

``predictions.json`` holds ``images`` (id, file_name, width, height), ``categories`` and
``annotations``: one per detection with its ``image_id``, ``category_id``, ``bbox`` ``[x, y, w,
h]`` in original pixels, ``area`` and ``score``; the ``annotations`` list is a COCO results list
(``COCO.loadRes``). ``predictions.npz`` holds ``image_ids`` with ``class_probabilities``
``[images, nc]`` (cls) and ``annotation_ids`` with ``embeddings`` ``[detections, D]`` (emb).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import write_jpeg

from yolor_lightning.atomic import atomic_path
from yolor_lightning.drawing import draw_boxes
from yolor_lightning.predict.categories import Categories
from yolor_lightning.predict.detections import ImagePrediction

COCO_FILE = "predictions.json"
ARRAYS_FILE = "predictions.npz"


def draw(prediction: ImagePrediction, categories: Categories) -> torch.Tensor:
    """The frame with a box, its class name and score per detection (uint8 [3, H, W])."""
    names = [category["name"] for category in categories]
    return draw_boxes(
        prediction.frame.image, prediction.boxes, prediction.labels, names, prediction.scores
    )


class PredictionWriter:
    """Writes each prediction's drawing as it comes, and the COCO file and arrays at
    :meth:`close`; images are numbered from 1 in the order they come."""

    def __init__(self, out: Path, categories: Categories, drawn: bool = True):
        self.out = out
        self.categories = categories
        self.drawn = drawn
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.class_probabilities: list[np.ndarray] = []
        self.embeddings: list[np.ndarray] = []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, prediction: ImagePrediction) -> None:
        frame = prediction.frame
        image_id = len(self.images) + 1
        height, width = frame.image.shape[-2:]
        self.images.append(
            {"id": image_id, "file_name": frame.file_name, "width": width, "height": height}
        )
        for box, score, label in zip(
            prediction.boxes.tolist(),
            prediction.scores.tolist(),
            prediction.labels.tolist(),
            strict=True,
        ):
            x0, y0, x1, y1 = box
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": self.categories[label]["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "score": score,
                }
            )
        if prediction.class_probabilities is not None:
            self.class_probabilities.append(prediction.class_probabilities.numpy())
        if prediction.embeddings is not None:
            self.embeddings.append(prediction.embeddings.numpy())
        if self.drawn:
            write_jpeg(draw(prediction, self.categories), str(self.out / f"{frame.name}.jpg"))

    def close(self) -> dict[str, Path]:
        """Write ``predictions.json`` (and ``predictions.npz`` for cls / emb); their paths."""
        written = {"coco": self.out / COCO_FILE}
        document = {
            "images": self.images,
            "categories": self.categories,
            "annotations": self.annotations,
        }
        with atomic_path(written["coco"]) as temporary:
            temporary.write_text(json.dumps(document) + "\n")
        arrays: dict[str, np.ndarray] = {}
        if self.class_probabilities:
            arrays["image_ids"] = np.array([image["id"] for image in self.images])
            arrays["class_probabilities"] = np.stack(self.class_probabilities)
        if self.embeddings:
            arrays["annotation_ids"] = np.array([a["id"] for a in self.annotations])
            arrays["embeddings"] = np.concatenate(self.embeddings)
        if arrays:
            written["arrays"] = self.out / ARRAYS_FILE
            np.savez(written["arrays"], **arrays)
        return written

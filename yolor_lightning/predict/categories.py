"""The categories a network predicts, as COCO lists them: ``[{"id", "name"}]`` in label order.

Labels are contiguous (``0..nc-1``, the dataset's category ids sorted); a prediction written as
COCO JSON needs the ids back, and a drawn box its name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yolor_lightning.data.shapes import CATEGORIES as SHAPES

Categories = list[dict[str, Any]]


def numbered(num_classes: int) -> Categories:
    """Categories known only by their count: id and name are the label."""
    return [{"id": label, "name": str(label)} for label in range(num_classes)]


def categories_of(checkpoint: dict[str, Any]) -> Categories:
    """The categories of a training checkpoint's dataset: the generated shapes', else those of
    its COCO annotation file where that file is on this machine, else :func:`numbered`."""
    data = checkpoint.get("datamodule_hyper_parameters", {})
    num_classes = int(checkpoint["hyper_parameters"]["model"]["num_classes"])
    if data.get("name") == "shapes":
        return [{"id": index + 1, "name": name} for index, name in enumerate(SHAPES)]
    root = data.get("root")
    annotations = Path(root) / "annotations" / "instances_val2017.json" if root else None
    if annotations is not None and annotations.is_file():
        listed = json.loads(annotations.read_text())["categories"]
        return [{"id": c["id"], "name": c["name"]} for c in sorted(listed, key=lambda c: c["id"])]
    return numbered(num_classes)

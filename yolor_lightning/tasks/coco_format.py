"""Per-image box tensors as COCO datasets for hotcoco, handed over as whole columns.

torchmetrics builds its COCO datasets one annotation at a time, a Python dict per box. Here each
field of all images is concatenated once and passed to hotcoco (``COCO.from_arrays`` and an
``(N, 7)`` results array for ``load_res``), so no per-box Python object is made. The datasets are
the ones torchmetrics builds (image ids in update order, annotation ids from 1, the union of the
labels as categories, the given area where positive and w x h otherwise, detection area w x h),
so COCOeval scores them the same, ties included (``tests/test_coco_format.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import hotcoco
import numpy as np
import torch
from torch import Tensor


def _column(tensors: Sequence[Tensor], width: int = 1) -> np.ndarray:
    """All images' values of one field as float64, one row of ``width`` per annotation.

    Every value a float32 or integer tensor holds is exact in float64, as in the Python floats of
    torchmetrics' conversion."""
    rows = [tensor.detach().cpu().reshape(-1, width) for tensor in tensors]
    column = torch.cat(rows) if rows else torch.zeros(0, width)
    return column.double().numpy()


def _image_ids(labels: Sequence[Tensor]) -> np.ndarray:
    counts = torch.tensor([len(image_labels) for image_labels in labels], dtype=torch.long)
    return torch.repeat_interleave(torch.arange(len(counts)), counts).numpy()


def coco_datasets(
    detection_xywh: Sequence[Tensor],
    detection_scores: Sequence[Tensor],
    detection_labels: Sequence[Tensor],
    ground_truth_xywh: Sequence[Tensor],
    ground_truth_labels: Sequence[Tensor],
    ground_truth_area: Sequence[Tensor],
    ground_truth_crowds: Sequence[Tensor],
) -> tuple[hotcoco.COCO, hotcoco.COCO]:
    """(detections, ground truth) as indexed hotcoco datasets; image i is the i-th list entry."""
    truth_labels = _column(ground_truth_labels).ravel().astype(np.int64)
    found_labels = _column(detection_labels).ravel()
    categories = np.union1d(truth_labels, found_labels.astype(np.int64)).tolist()
    truth_boxes = _column(ground_truth_xywh, width=4)
    area = _column(ground_truth_area).ravel()
    ground_truth = hotcoco.COCO.from_arrays(
        [{"id": index} for index in range(len(ground_truth_labels))],
        [{"id": label, "name": str(label)} for label in categories],
        _image_ids(ground_truth_labels),
        truth_labels,
        truth_boxes,
        area=np.where(area > 0, area, truth_boxes[:, 2] * truth_boxes[:, 3]),
        iscrowd=_column(ground_truth_crowds).ravel().astype(np.int64),
    )
    # load_res' rows: image id, x, y, w, h, score, category
    results = np.column_stack(
        [
            _image_ids(detection_labels),
            _column(detection_xywh, width=4),
            _column(detection_scores).ravel(),
            found_labels,
        ]
    )
    return ground_truth.load_res(results.reshape(-1, 7)), ground_truth

"""COCO box mAP as a torchmetrics Metric, equal to pycocotools' COCOeval on the same data."""

from __future__ import annotations

import contextlib
import io

import hotcoco
import numpy as np
import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from yolor_lightning.tasks.coco_format import coco_datasets
from yolor_lightning.tasks.per_image import PerImageResults, match_images

COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
"""The 12 stats of COCOeval.summarize(), in its order."""

TORCHMETRICS_STAT_KEYS = (
    *("map", "map_50", "map_75", "map_small", "map_medium", "map_large"),
    *("mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"),
)
"""The keys torchmetrics' ``MeanAveragePrecision.compute()`` gives the same 12 stats, in
``COCO_STAT_NAMES``' order."""

# COCOeval's own float64 thresholds. torchmetrics' defaults come from a float32 linspace (0.8
# becomes 0.800000012), which changes the outcome of an IoU or a recall exactly on a threshold.
_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()

_GROUND_TRUTH_KEYS = frozenset({"boxes", "labels", "area", "iscrowd"})


class CocoEvaluator(MeanAveragePrecision):
    """COCO bbox evaluation returning the 12 COCOeval stats by name.

    torchmetrics keeps the per-image states and gathers them across processes; hotcoco (Rust,
    the same stats as pycocotools bit for bit) scores them: on 1,000 validation images with
    about 290 detections each, ``compute()`` took 0.066 of the time of torchmetrics' own
    ``compute()`` with its faster_coco_eval backend (``benchmarks/validation_parts.py``).

    `update` takes xyxy boxes in original image pixels. Ground truth must carry the annotation
    `area` (COCO's small/medium/large ranges use it, not the box area) and `iscrowd` (detections
    on crowd regions are ignored). Images are numbered in update order; COCOeval breaks score ties
    between images by image id, so feed images by ascending id to reproduce it bit for bit.
    """

    def __init__(self) -> None:
        super().__init__(
            box_format="xyxy",
            iou_type="bbox",
            iou_thresholds=_IOU_THRESHOLDS,
            rec_thresholds=_RECALL_THRESHOLDS,
            # torchmetrics wants an installed backend; _coco_stats scores with hotcoco instead
            backend="pycocotools",
        )
        # NMS keeps up to 300 boxes per image as YOLO evaluation does; COCO caps them per class.
        self.warn_on_many_detections = False
        self._evaluated: tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]] | None = None

    def update(self, preds: list[dict[str, Tensor]], gts: list[dict[str, Tensor]]) -> None:
        """Add one batch: preds {boxes, scores, labels}; gts {boxes, labels, area, iscrowd}."""
        for index, gt in enumerate(gts):
            missing = _GROUND_TRUTH_KEYS - gt.keys()
            if missing:
                raise KeyError(
                    f"ground truth {index} lacks {sorted(missing)}: COCO evaluation needs "
                    f"{sorted(_GROUND_TRUTH_KEYS)}"
                )
        super().update(preds, gts)

    def _sync_dist(self, dist_sync_fn: object = None, process_group: object = None) -> None:
        """Gather the per-image states of all ranks, in the split's order, whatever each holds.

        torchmetrics gathers these list states element by element, which needs as many images on
        every rank; an evaluation split shared without repeats gives ranks one image more or
        less. Rank r holds images r, r + W, r + 2W, ... (``UnrepeatedDistributedSampler``), so
        interleaving the ranks' lists restores the split's order, and with it COCOeval's
        tie-breaking by image id: the same stats as in one process.
        """
        group = process_group or self.process_group
        world_size = torch.distributed.get_world_size(group)
        for name in self._reductions:
            local = [tensor.cpu() for tensor in getattr(self, name)]
            gathered: list[list[Tensor]] = [[] for _ in range(world_size)]
            torch.distributed.all_gather_object(gathered, local, group=group)
            longest = max(len(part) for part in gathered)
            merged = [part[i] for i in range(longest) for part in gathered if i < len(part)]
            setattr(self, name, [tensor.to(self.device) for tensor in merged])

    def compute(self) -> dict[str, float]:
        """The 12 COCO stats named as in `COCO_STAT_NAMES` (-1 where COCO has nothing to score)."""
        stats = self._coco_stats()
        # compute() runs on the states gathered from every rank: keep them for per_image_results
        self._evaluated = (
            [
                {"boxes": boxes, "scores": scores, "labels": labels}
                for boxes, scores, labels in zip(
                    self.detection_box, self.detection_scores, self.detection_labels, strict=True
                )
            ],
            [
                {"boxes": boxes, "labels": labels, "area": area, "iscrowd": crowd}
                for boxes, labels, area, crowd in zip(
                    self.groundtruth_box,
                    self.groundtruth_labels,
                    self.groundtruth_area,
                    self.groundtruth_crowds,
                    strict=True,
                )
            ],
        )
        return dict(zip(COCO_STAT_NAMES, stats, strict=True))

    def _coco_stats(self) -> list[float]:
        """COCOeval's 12 stats over the states, scored by hotcoco on datasets handed over as
        columns (``tasks/coco_format.py``)."""
        if not self.groundtruth_labels:
            return [-1.0] * len(COCO_STAT_NAMES)
        detections, ground_truth = coco_datasets(
            self.detection_box,
            self.detection_scores,
            self.detection_labels,
            self.groundtruth_box,
            self.groundtruth_labels,
            self.groundtruth_area,
            self.groundtruth_crowds,
        )
        evaluation = hotcoco.COCOeval(ground_truth, detections, "bbox")
        evaluation.params.iou_thrs = list(self.iou_thresholds)
        evaluation.params.rec_thrs = list(self.rec_thresholds)
        evaluation.params.max_dets = list(self.max_detection_thresholds)
        evaluation.evaluate()
        evaluation.accumulate()
        # summarize() prints its table; the LightningModule logs the stats already
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.summarize()
        return [float(stat) for stat in evaluation.stats]

    def per_image_results(self) -> PerImageResults:
        """The per-image matches of the images the last ``compute()`` evaluated (all ranks'),
        for the paired bootstrap over images in the report (see ``tasks/per_image.py``)."""
        if self._evaluated is None:
            raise RuntimeError("per_image_results() needs a compute() first: nothing evaluated")
        return match_images(*self._evaluated)

"""Data: COCO-format reading, the generated ``shapes`` set, box-aware transforms, DataModules."""

from yolor_lightning.data.coco import CocoDetection, CocoFormatError, UnreadableImageError
from yolor_lightning.data.datamodule import (
    CocoDataModule,
    DetectionDataModule,
    DetectionDataset,
    ShapesDataModule,
    collate_batch,
)
from yolor_lightning.data.shapes import ShapesConfig, ensure_shapes
from yolor_lightning.data.transforms import Augment, letterbox_to_original

__all__ = [
    "Augment",
    "CocoDataModule",
    "CocoDetection",
    "CocoFormatError",
    "DetectionDataModule",
    "DetectionDataset",
    "ShapesConfig",
    "ShapesDataModule",
    "UnreadableImageError",
    "collate_batch",
    "ensure_shapes",
    "letterbox_to_original",
]

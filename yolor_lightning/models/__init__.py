"""The unified network (plain PyTorch): blocks, backbone, neck, task heads, assembled models."""

from yolor_lightning.models.head import DetectionHead
from yolor_lightning.models.task_heads import ClassificationHead, EmbeddingHead
from yolor_lightning.models.yolo import (
    DEFAULT_ANCHORS,
    MODEL_SIZES,
    TASKS,
    YOLOv4CSP,
    build_yolov4_csp,
    output_tensors,
)

__all__ = [
    "DEFAULT_ANCHORS",
    "MODEL_SIZES",
    "TASKS",
    "ClassificationHead",
    "DetectionHead",
    "EmbeddingHead",
    "YOLOv4CSP",
    "build_yolov4_csp",
    "output_tensors",
]

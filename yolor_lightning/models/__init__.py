"""Detection networks (plain PyTorch): blocks, backbones, necks, heads and assembled models."""

from yolor_lightning.models.head import DetectionHead
from yolor_lightning.models.yolo import DEFAULT_ANCHORS, MODEL_SIZES, YOLOv4CSP, build_yolov4_csp

__all__ = ["DEFAULT_ANCHORS", "MODEL_SIZES", "DetectionHead", "YOLOv4CSP", "build_yolov4_csp"]

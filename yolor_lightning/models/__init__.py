"""The unified network (plain PyTorch): parts registered by name (backbones, necks, detection
heads), the task heads, and `build_network`, which assembles them from a model config.

Importing this package registers the built-in parts: YOLOv4-CSP's `cspdarknet53` and `csp_pan`,
GELAN's `gelan` and `gelan_pan`, RevCol's `revcol` and `revcol_fpn`, the detection heads `anchor`
and `dfl`, YOLOv9's auxiliary branch `pgi`.
"""

from yolor_lightning.models import (  # noqa: F401 (registers parts)
    dfl_head,
    gelan,
    head,
    pgi,
    revcol,
    yolo,
)
from yolor_lightning.models.head import DEFAULT_ANCHORS, DetectionHead
from yolor_lightning.models.network import (
    TASKS,
    UnifiedNetwork,
    build_heads,
    build_network,
    output_tensors,
)
from yolor_lightning.models.registry import AUXILIARY_BRANCHES, BACKBONES, DETECTION_HEADS, NECKS
from yolor_lightning.models.task_heads import ClassificationHead, EmbeddingHead
from yolor_lightning.models.yolo import MODEL_SIZES, YOLOv4CSP, build_yolov4_csp

__all__ = [
    "AUXILIARY_BRANCHES",
    "BACKBONES",
    "DEFAULT_ANCHORS",
    "DETECTION_HEADS",
    "MODEL_SIZES",
    "NECKS",
    "TASKS",
    "ClassificationHead",
    "DetectionHead",
    "EmbeddingHead",
    "UnifiedNetwork",
    "YOLOv4CSP",
    "build_heads",
    "build_network",
    "build_yolov4_csp",
    "output_tensors",
]

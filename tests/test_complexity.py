"""Parameter and FLOP counts, checked against the official YOLOv4-CSP figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.models import YOLOv4CSP, build_yolov4_csp

# YOLOR-CSP / YOLOv4-CSP at 640x640, 80 classes (yolov7 README comparison table; YOLOR paper).
OFFICIAL_PARAMETERS = 52.9e6
OFFICIAL_GFLOPS = 120.4


@pytest.fixture(scope="module")
def full_model_on_meta() -> YOLOv4CSP:
    """Shapes only: counting needs no real weights, and meta tensors cost no compute."""
    with torch.device("meta"):
        return YOLOv4CSP(num_classes=80)


def test_full_model_matches_official_parameter_count(full_model_on_meta: YOLOv4CSP) -> None:
    assert count_parameters(full_model_on_meta) == pytest.approx(OFFICIAL_PARAMETERS, rel=5e-3)


def test_full_model_matches_official_gflops_at_640(full_model_on_meta: YOLOv4CSP) -> None:
    assert count_gflops(full_model_on_meta, 640) == pytest.approx(OFFICIAL_GFLOPS, rel=5e-3)


def test_gflops_count_two_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    multiply_adds = 8 * 16 * 16 * 3 * 3 * 3
    assert count_gflops(conv, 16) == pytest.approx(2 * multiply_adds / 1e9)


def test_gflops_on_meta_equal_gflops_on_cpu() -> None:
    cpu_model = build_yolov4_csp("tiny", 80)
    with torch.device("meta"):
        meta_model = build_yolov4_csp("tiny", 80)
    assert count_gflops(meta_model, 128) == pytest.approx(count_gflops(cpu_model, 128))


def test_gflops_counting_restores_training_mode() -> None:
    model = build_yolov4_csp("tiny", 80).train()
    count_gflops(model, 64)
    assert model.training


def test_parameter_count_includes_frozen_parameters() -> None:
    layer = nn.Linear(4, 2)
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == 10

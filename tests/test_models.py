"""YOLOv4-CSP network: output shapes, decoding, initialisation, sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yolor_lightning.models import DEFAULT_ANCHORS, MODEL_SIZES, YOLOv4CSP, build_yolov4_csp
from yolor_lightning.models.head import DetectionHead

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def tiny_model() -> YOLOv4CSP:
    torch.manual_seed(0)
    return build_yolov4_csp("tiny", NUM_CLASSES).eval()


def test_raw_outputs_have_one_map_per_level_at_non_square_input(tiny_model: YOLOv4CSP) -> None:
    with torch.no_grad():
        raw = tiny_model(torch.rand(2, 3, 128, 192))["det"]
    assert [tuple(level.shape) for level in raw] == [
        (2, 3, 16, 24, 5 + NUM_CLASSES),
        (2, 3, 8, 12, 5 + NUM_CLASSES),
        (2, 3, 4, 6, 5 + NUM_CLASSES),
    ]


def test_decoded_output_stacks_all_levels_and_anchors(tiny_model: YOLOv4CSP) -> None:
    with torch.no_grad():
        decoded = tiny_model.heads["det"].decode(tiny_model(torch.rand(2, 3, 128, 192))["det"])
    cells = 16 * 24 + 8 * 12 + 4 * 6
    assert decoded.shape == (2, 3 * cells, 5 + NUM_CLASSES)
    assert decoded[..., 4:].min() >= 0 and decoded[..., 4:].max() <= 1


def test_decode_matches_hand_computation() -> None:
    head = DetectionHead((8, 8, 8), num_classes=2, anchors=DEFAULT_ANCHORS, strides=(8, 16, 32))
    shapes = [(2, 3), (1, 2), (1, 1)]  # (H, W) per level of a 16x24 input
    raw = [torch.zeros(1, 3, h, w, 7) for h, w in shapes]
    logit = math.log(0.75 / 0.25)  # sigmoid = 0.75
    raw[1][0, 2, 0, 1] = torch.tensor([logit, 0.0, logit, 0.0, logit, 0.0, logit])
    decoded = head.decode(raw)[0]
    index = 3 * 2 * 3 + 2 * (1 * 2) + 0 * 2 + 1  # past level 0, anchor 2, row 0, column 1
    cx = (2 * 0.75 - 0.5 + 1) * 16
    cy = (2 * 0.5 - 0.5 + 0) * 16
    w = (2 * 0.75) ** 2 * 72
    h = (2 * 0.5) ** 2 * 146
    expected = torch.tensor([cx, cy, w, h, 0.75, 0.5, 0.75])
    torch.testing.assert_close(decoded[index], expected)


def test_anchors_are_a_pixel_buffer_per_level(tiny_model: YOLOv4CSP) -> None:
    head = tiny_model.heads["det"]
    assert head.anchors.shape == (3, 3, 2)
    assert head.anchors[2, 2].tolist() == [459.0, 401.0]
    assert "anchors" in dict(head.named_buffers())
    assert head.strides == (8, 16, 32)


def test_prediction_biases_start_at_official_priors(tiny_model: YOLOv4CSP) -> None:
    head = tiny_model.heads["det"]
    for predictor, stride in zip(head.predictors, head.strides, strict=True):
        bias = predictor.bias.detach().view(3, 5 + NUM_CLASSES)
        default_init_bound = 1 / math.sqrt(predictor.in_channels)
        objectness_prior = math.log(8 / (640 / stride) ** 2)
        class_prior = math.log(0.6 / (NUM_CLASSES - 0.99))
        assert (bias[:, 4] - objectness_prior).abs().max() <= default_init_bound
        assert (bias[:, 5:] - class_prior).abs().max() <= default_init_bound


def test_batch_norm_uses_yolors_eps_and_momentum(tiny_model: YOLOv4CSP) -> None:
    # YOLOR's models/models.py: BatchNorm2d(momentum=0.03, eps=1e-4) (YOLOv5 / YOLOv9: 1e-3)
    norms = [m for m in tiny_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    assert all(m.eps == 1e-4 and m.momentum == 0.03 for m in norms)


def test_head_predictors_read_the_neck_outputs() -> None:
    with torch.device("meta"):
        model = YOLOv4CSP(num_classes=80)
    assert model.neck.out_channels == (256, 512, 1024)
    assert isinstance(model.heads["det"].predictors, nn.ModuleList)
    assert [p.in_channels for p in model.heads["det"].predictors] == [256, 512, 1024]
    assert [p.out_channels for p in model.heads["det"].predictors] == [255, 255, 255]


def test_channels_last_gives_the_same_outputs(tiny_model: YOLOv4CSP) -> None:
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = tiny_model(images)["det"]
        model = build_yolov4_csp("tiny", NUM_CLASSES).eval()
        model.load_state_dict(tiny_model.state_dict())
        model = model.to(memory_format=torch.channels_last)
        actual = model(images.to(memory_format=torch.channels_last))["det"]
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_sizes_grow_from_tiny_to_full() -> None:
    counts = {}
    for name in MODEL_SIZES:
        with torch.device("meta"):
            model = build_yolov4_csp(name, 80)
        counts[name] = sum(p.numel() for p in model.parameters())
    assert list(counts.values()) == sorted(counts.values())
    assert 1e6 < counts["tiny"] < 2e6


def test_sizes_have_their_parameter_counts() -> None:
    """At 80 classes; full and x are the official cfg/yolov4_csp.cfg and cfg/yolov4_csp_x.cfg
    (tests/test_convert.py counts those from the cfgs' layer lists)."""
    counts = {}
    for name in MODEL_SIZES:
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in build_yolov4_csp(name, 80).parameters())
    assert counts == {
        "tiny": 1_373_453,
        "small": 2_395_541,
        "medium": 11_051_821,
        "full": 52_921_437,
        "x": 99_751_053,
    }


def test_unknown_size_names_the_allowed_sizes() -> None:
    with pytest.raises(ValueError, match=r"'huge'.*tiny, small, medium, full"):
        build_yolov4_csp("huge", 80)


def test_strides_other_than_the_backbone_strides_are_rejected() -> None:
    with pytest.raises(ValueError, match="strides"):
        YOLOv4CSP(num_classes=1, size="tiny", strides=(4, 8, 16))

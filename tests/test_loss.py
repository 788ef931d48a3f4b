"""Target assignment and the YOLO detection loss on hand-built cases."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from yolor_lightning.config import ConfigValueError, check_values, compose_config
from yolor_lightning.models import DEFAULT_ANCHORS, build_yolov4_csp
from yolor_lightning.tasks.loss import YoloLoss, focal_bce_with_logits
from yolor_lightning.tasks.targets import assign_targets
from yolor_lightning.train import build_module

IMAGE_SIZE = 256
STRIDES = (8, 16, 32)
GRID_SHAPES = [(IMAGE_SIZE // s, IMAGE_SIZE // s) for s in STRIDES]
ANCHORS = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
NUM_CLASSES = 3
DEFAULT_GAINS = {"box_gain": 0.05, "obj_gain": 1.0, "cls_gain": 0.5}

# One 30x30 box centred at (101, 61), class 2, in the second image of two.
BOX_TARGETS = [
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    {"boxes": torch.tensor([[86.0, 46.0, 116.0, 76.0]]), "labels": torch.tensor([2])},
]
EMPTY_TARGETS = [
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(2)
]


def make_loss(**overrides: float) -> YoloLoss:
    options = {"num_classes": NUM_CLASSES, **overrides}
    return YoloLoss(anchors=ANCHORS, strides=STRIDES, **options)


def random_raw(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, h, w, 5 + NUM_CLASSES, generator=generator) for h, w in GRID_SHAPES]


def test_one_box_is_assigned_to_the_expected_anchors_levels_and_cells() -> None:
    levels = assign_targets(BOX_TARGETS, ANCHORS, STRIDES, GRID_SHAPES, anchor_threshold=4.0)
    matches = [
        set(zip(lv.image.tolist(), lv.anchor.tolist(), lv.gy.tolist(), lv.gx.tolist(), strict=True))
        for lv in levels
    ]
    # P3: centre (12.625, 7.625) cells; all anchors within 4x of 30x30; neighbours right and down.
    assert matches[0] == {
        (1, a, gy, gx) for a in (0, 1, 2) for gy, gx in [(7, 12), (7, 13), (8, 12)]
    }
    # P4: centre (6.3125, 3.8125); anchor (72, 146) is 146/30 > 4 times taller; left and down.
    assert matches[1] == {(1, a, gy, gx) for a in (0, 1) for gy, gx in [(3, 6), (3, 5), (4, 6)]}
    # P5: every anchor is more than 4x larger than the box.
    assert matches[2] == set()
    p3 = levels[0]
    for gy, gx, box in zip(p3.gy.tolist(), p3.gx.tolist(), p3.boxes.tolist(), strict=True):
        assert box == pytest.approx([12.625 - gx, 7.625 - gy, 3.75, 3.75])
    assert p3.labels.tolist() == [2] * 9
    assert {tuple(a) for a in (p3.anchors * 8).tolist()} == {(12, 16), (19, 36), (40, 28)}


def test_a_centre_on_a_grid_line_takes_the_official_neighbours_only() -> None:
    # Centre (96, 64): exactly on the P3 grid lines x = 12, y = 8 (fraction 0). YOLOR's rule
    # (`xy % 1 < 0.5` left / top, `xy % 1 > 0.5` right / bottom) adds the left and top cells
    # only; the mirrored YOLOv5 test would add the own cell (12, 8) twice more.
    on_line = {"boxes": torch.tensor([[81.0, 49.0, 111.0, 79.0]]), "labels": torch.tensor([0])}
    p3 = assign_targets([on_line], ANCHORS, STRIDES, GRID_SHAPES)[0]
    cells = list(zip(p3.anchor.tolist(), p3.gy.tolist(), p3.gx.tolist(), strict=True))
    assert sorted(cells) == sorted(
        (a, gy, gx) for a in (0, 1, 2) for gy, gx in [(8, 12), (8, 11), (7, 12)]
    )


def test_boxes_centred_on_the_image_border_stay_inside_the_grid() -> None:
    corners = {"boxes": torch.tensor([[-6.0, -6.0, 6.0, 6.0], [244.0, 244.0, 268.0, 268.0]]),
               "labels": torch.tensor([0, 1])}  # fmt: skip
    levels = assign_targets([corners], ANCHORS, STRIDES, GRID_SHAPES)
    assert levels[0].image.numel() > 0
    for level, (h, w) in zip(levels, GRID_SHAPES, strict=True):
        assert ((level.gx >= 0) & (level.gx < w) & (level.gy >= 0) & (level.gy < h)).all()


def test_image_without_objects_gives_objectness_only_loss() -> None:
    total, parts = make_loss()(random_raw(), EMPTY_TARGETS)
    assert parts["box"] == 0 and parts["cls"] == 0
    assert parts["obj"] > 0
    torch.testing.assert_close(total, 2 * parts["obj"])


def logit(probability: torch.Tensor) -> torch.Tensor:
    return torch.log(probability / (1 - probability))


def perfect_raw() -> list[torch.Tensor]:
    """Logits that decode exactly to the target box at every assigned anchor and cell, with
    confident objectness and class there, and confident background everywhere else."""
    raw = [torch.full((2, 3, h, w, 5 + NUM_CLASSES), -20.0) for h, w in GRID_SHAPES]
    levels = assign_targets(BOX_TARGETS, ANCHORS, STRIDES, GRID_SHAPES)
    for pred, level in zip(raw, levels, strict=True):
        xy_prob = (level.boxes[:, :2] + 0.5) / 2
        wh_prob = torch.sqrt(level.boxes[:, 2:] / level.anchors) / 2
        cells = pred[level.image, level.anchor, level.gy, level.gx]
        cells[:, :2] = logit(xy_prob)
        cells[:, 2:4] = logit(wh_prob)
        cells[:, 4] = 20.0
        cells[torch.arange(len(level.labels)), 5 + level.labels] = 20.0
        pred[level.image, level.anchor, level.gy, level.gx] = cells
    return raw


def test_perfect_prediction_has_near_zero_loss() -> None:
    total, parts = make_loss()(perfect_raw(), BOX_TARGETS)
    assert parts["box"] < 1e-5
    assert parts["obj"] < 1e-4
    assert parts["cls"] < 1e-4
    assert total < 1e-3


def test_label_smoothing_keeps_class_loss_above_zero_at_a_perfect_prediction() -> None:
    _, parts = make_loss(label_smoothing=0.1)(perfect_raw(), BOX_TARGETS)
    assert parts["cls"] > 0.01


@pytest.mark.parametrize(
    ("gain", "part"), [("box_gain", "box"), ("obj_gain", "obj"), ("cls_gain", "cls")]
)
def test_each_gain_scales_only_its_part(gain: str, part: str) -> None:
    raw = random_raw()
    _, base = make_loss(**DEFAULT_GAINS)(raw, BOX_TARGETS)
    _, scaled = make_loss(**{**DEFAULT_GAINS, gain: 3 * DEFAULT_GAINS[gain]})(raw, BOX_TARGETS)
    for name in base:
        factor = 3.0 if name == part else 1.0
        torch.testing.assert_close(scaled[name], factor * base[name])


def test_gains_are_rescaled_for_classes_and_levels() -> None:
    loss = make_loss(**DEFAULT_GAINS)
    assert loss.box_gain == pytest.approx(0.05)
    assert loss.obj_gain == pytest.approx(1.0)
    assert loss.cls_gain == pytest.approx(0.5 * 3 / 80)


def test_total_is_batch_size_times_the_sum_of_parts() -> None:
    total, parts = make_loss()(random_raw(), BOX_TARGETS)
    torch.testing.assert_close(total, 2 * (parts["box"] + parts["obj"] + parts["cls"]))
    assert not any(part.requires_grad for part in parts.values())


def test_level_weights_need_one_weight_per_level() -> None:
    with pytest.raises(ValueError, match="one weight per level"):
        make_loss(level_weights=(4.0, 1.0))


def test_loss_backpropagates_into_the_network() -> None:
    torch.manual_seed(0)
    model = build_yolov4_csp("tiny", NUM_CLASSES)
    loss = YoloLoss(model.heads["det"].anchors, model.heads["det"].strides, NUM_CLASSES)
    total, _ = loss(model(torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE))["det"], BOX_TARGETS)
    total.backward()
    gradient = model.heads["det"].predictors[0].weight.grad
    assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert math.isfinite(total.item())


def test_box_collapsed_below_float_resolution_gives_a_finite_loss() -> None:
    """w and h logits of -20 at the assigned cells: the box is a point at the target's centre
    (torchvision's CIoU gave atan(0 / 0) = NaN there, a NaN val/loss at epoch 0). 1 - CIoU is
    then 1 - IoU (0) + centre distance (0) + alpha v, v = 4/pi^2 (atan(30/30) - 0)^2 = 1/4 and
    alpha = v / (1 + v) = 1/5: 1.05 per match, on the two levels with matches."""
    raw = perfect_raw()
    levels = assign_targets(BOX_TARGETS, ANCHORS, STRIDES, GRID_SHAPES)
    for pred, level in zip(raw, levels, strict=True):
        pred[level.image, level.anchor, level.gy, level.gx, 2:4] = -20.0
    total, parts = make_loss(**DEFAULT_GAINS)(raw, BOX_TARGETS)
    assert torch.isfinite(total)
    assert parts["box"].item() == pytest.approx(0.05 * 2 * 1.05, rel=1e-5)


def test_label_smoothing_gives_class_targets_one_minus_half_eps_and_half_eps() -> None:
    targets = make_loss(label_smoothing=0.1).class_targets(torch.tensor([2, 0]))
    assert torch.equal(targets, torch.tensor([[0.05, 0.05, 0.95], [0.95, 0.05, 0.05]]))
    one_hot = make_loss().class_targets(torch.tensor([1]))
    assert torch.equal(one_hot, torch.tensor([[0.0, 1.0, 0.0]]))


@pytest.mark.parametrize(("gamma", "alpha"), [(1.5, 0.25), (2.0, 0.5), (0.5, 0.9)])
def test_focal_loss_gives_torchvisions_sigmoid_focal_loss(gamma: float, alpha: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=generator) * 3
    hard = (torch.rand(64, 5, generator=generator) < 0.3).float()
    soft = torch.rand(64, 5, generator=generator)  # an IoU objectness target, a smoothed label
    for target in (hard, soft):
        expected = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="mean")
        torch.testing.assert_close(focal_bce_with_logits(logits, target, gamma, alpha), expected)


def test_focal_loss_wraps_the_objectness_and_class_bce() -> None:
    raw = random_raw()
    _, parts = make_loss(fl_gamma=1.5, fl_alpha=0.25, **DEFAULT_GAINS)(raw, EMPTY_TARGETS)
    expected = sum(
        weight * sigmoid_focal_loss(pred[..., 4], torch.zeros_like(pred[..., 4]), 0.25, 1.5, "mean")
        for pred, weight in zip(raw, (4.0, 1.0, 0.4), strict=True)
    )
    torch.testing.assert_close(parts["obj"], DEFAULT_GAINS["obj_gain"] * expected)
    _, plain_parts = make_loss(**DEFAULT_GAINS)(raw, BOX_TARGETS)
    _, focal_parts = make_loss(fl_gamma=1.5, **DEFAULT_GAINS)(raw, BOX_TARGETS)
    assert focal_parts["box"] == plain_parts["box"]
    assert focal_parts["cls"] < plain_parts["cls"] and focal_parts["obj"] < plain_parts["obj"]


def test_focal_gamma_zero_is_the_plain_bce_loss_exactly() -> None:
    raw = random_raw()
    total, parts = make_loss(label_smoothing=0.1)(raw, BOX_TARGETS)
    off_total, off_parts = make_loss(label_smoothing=0.1, fl_gamma=0.0, fl_alpha=0.9)(
        raw, BOX_TARGETS
    )
    assert torch.equal(off_total, total)
    assert all(torch.equal(off_parts[name], parts[name]) for name in parts)


def test_loss_options_reach_the_loss_from_the_config() -> None:
    overrides = [
        "task.loss.label_smoothing=0.1",
        "task.loss.fl_gamma=1.5",
        "task.loss.fl_alpha=0.4",
    ]
    loss = build_module(compose_config(overrides)).loss_fn
    assert (loss.positive_label, loss.negative_label) == (0.95, 0.05)
    assert (loss.fl_gamma, loss.fl_alpha) == (1.5, 0.4)
    default = build_module(compose_config()).loss_fn
    assert (default.positive_label, default.negative_label, default.fl_gamma) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("task.loss.fl_gamma=-1", ">= 0"),
        ("task.loss.fl_alpha=0", "in (0, 1)"),
        ("task.loss.fl_alpha=1.0", "in (0, 1)"),
    ],
)
def test_focal_options_out_of_range_name_the_key(override: str, allowed: str) -> None:
    with pytest.raises(ConfigValueError, match=re.escape(allowed)) as error:
        check_values(compose_config([override]))
    assert override.split("=")[0] in str(error.value)


def test_focal_loss_and_label_smoothing_are_refused_with_the_dfl_head() -> None:
    for override in ("task.loss.fl_gamma=1.5", "task.loss.label_smoothing=0.1"):
        with pytest.raises(ConfigValueError, match=re.escape("model.head=dfl")) as error:
            check_values(compose_config(["model=gelan", override]))
        assert override.split("=")[0] in str(error.value)

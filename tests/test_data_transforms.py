"""Boxes follow the image: each box is drawn as a coloured rectangle that it must stay on."""

import pytest
import torch
from torchvision import tv_tensors

from yolor_lightning.data.transforms import (
    PAD_VALUE,
    Augment,
    clip_boxes,
    hflip,
    hsv_jitter,
    letterbox,
    letterbox_to_original,
    mosaic,
    train_transform,
)

COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (250, 0, 250)]


def _sample(h: int, w: int, boxes: list[list[int]], first_colour: int = 0, image_id: int = 1):
    """A grey image with each xyxy box painted in its own colour; labels index ``COLOURS``."""
    image = torch.full((3, h, w), 60, dtype=torch.uint8)
    labels = list(range(first_colour, first_colour + len(boxes)))
    for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
        image[:, y0:y1, x0:x1] = torch.tensor(COLOURS[label], dtype=torch.uint8)[:, None, None]
    n = len(boxes)
    return {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(h, w),
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "area": torch.ones(n),
        "identities": torch.arange(n),
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
    }


def _colour_extent(image: torch.Tensor, colour: tuple[int, int, int]) -> list[float] | None:
    """xyxy extent of the pixels close to ``colour`` (resizing blurs edges, hence the tolerance)."""
    close = (image.int() - torch.tensor(colour)[:, None, None]).abs().max(0).values < 40
    ys, xs = torch.nonzero(close, as_tuple=True)
    if len(xs) == 0:
        return None
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def _assert_boxes_on_their_rectangles(sample, tolerance: float = 1.5):
    for box, label in zip(sample["boxes"].tolist(), sample["labels"].tolist(), strict=True):
        extent = _colour_extent(sample["image"], COLOURS[label])
        assert extent == pytest.approx(box, abs=tolerance), (label, box, extent)


BOXES = [[10, 20, 60, 50], [100, 70, 190, 115], [150, 5, 199, 40]]


def test_letterbox_keeps_aspect_pads_grey_and_moves_boxes():
    out = letterbox(_sample(120, 200, BOXES), 100)
    assert out["image"].shape == (3, 100, 100) and out["image"].dtype == torch.uint8
    assert out["scale"] == 0.5 and out["pad"] == (0.0, 20.0) and out["orig_size"] == (120, 200)
    assert (out["image"][:, :20] == PAD_VALUE).all() and (out["image"][:, 80:] == PAD_VALUE).all()
    assert out["boxes"][0].tolist() == [5, 30, 30, 45]
    _assert_boxes_on_their_rectangles(out)


def test_letterbox_to_original_inverts_letterbox_and_clips():
    sample = _sample(120, 200, BOXES)
    out = letterbox(sample, 160)
    back = letterbox_to_original(out["boxes"], out["scale"], out["pad"], out["orig_size"])
    torch.testing.assert_close(back, sample["boxes"].as_subclass(torch.Tensor))
    outside = torch.tensor([[-10.0, 0.0, 170.0, 200.0]])
    assert letterbox_to_original(outside, 0.5, (0.0, 20.0), (120, 200)).tolist() == [
        [0.0, 0.0, 200.0, 120.0]
    ]


def test_flip_mirrors_boxes_with_the_image():
    out = hflip(_sample(120, 200, BOXES))
    assert out["boxes"][0].tolist() == [140, 20, 190, 50]
    _assert_boxes_on_their_rectangles(out, tolerance=0)


@pytest.mark.parametrize("seed", range(6))
def test_mosaic_boxes_stay_on_their_rectangles_and_cut_ones_are_dropped(seed):
    tiles = [
        _sample(120, 200, [[20, 20, 80, 70]], first_colour=0, image_id=7),
        _sample(200, 160, [[30, 40, 110, 150]], first_colour=1),
        _sample(150, 150, [[10, 60, 70, 120], [90, 10, 140, 50]], first_colour=2),
        _sample(90, 180, [[100, 20, 170, 80], [5, 5, 60, 60]], first_colour=4),
    ]
    out = mosaic(tiles, 128, torch.Generator().manual_seed(seed))
    assert out["image"].shape == (3, 128, 128) and out["image"].dtype == torch.uint8
    assert out["image_id"] == 7
    _assert_boxes_on_their_rectangles(out)
    assert (out["boxes"][:, 2:] - out["boxes"][:, :2] >= 2).all()
    kept = set(out["labels"].tolist())
    for label, colour in enumerate(COLOURS):
        extent = _colour_extent(out["image"], colour)
        # 1000 px² is over a quarter of every scaled box (largest: 51x70), so its box must stay
        big = extent is not None and (extent[2] - extent[0]) * (extent[3] - extent[1]) >= 1000
        assert label in kept or not big, f"visible rectangle {label} lost its box"


def test_clip_boxes_clips_to_the_image_and_drops_slivers():
    sample = _sample(100, 100, [])
    sample["boxes"] = tv_tensors.BoundingBoxes(
        torch.tensor([[-20.0, 10.0, 40.0, 50.0], [98.5, 10.0, 130.0, 50.0], [-50.0, 0, 5.0, 10.0]]),
        format="XYXY",
        canvas_size=(100, 100),
    )
    for k in ("labels", "iscrowd", "identities"):
        sample[k] = torch.tensor([0, 1, 2])
    sample["area"] = torch.ones(3)
    out = clip_boxes(sample)
    assert out["boxes"].tolist() == [[0.0, 10.0, 40.0, 50.0]]
    assert out["labels"].tolist() == out["identities"].tolist() == [0]


def test_hsv_jitter_keeps_uint8_and_is_the_identity_at_zero_gain():
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    assert torch.equal(hsv_jitter(image, 0.0, 0.0, 0.0, torch.Generator()), image)
    jittered = hsv_jitter(image, 0.5, 0.7, 0.4, torch.Generator().manual_seed(0))
    assert jittered.dtype == torch.uint8 and jittered.shape == image.shape
    assert not torch.equal(jittered, image)


def test_train_transform_without_mosaic_letterboxes_then_flips():
    augment = Augment(mosaic=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, flip_lr=1.0)
    out = train_transform([_sample(120, 200, BOXES)], 100, augment, torch.Generator())
    assert out["boxes"][0].tolist() == [70, 30, 95, 45]
    _assert_boxes_on_their_rectangles(out)

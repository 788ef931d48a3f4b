"""Boxes follow the image: each box is drawn as a coloured rectangle that it must stay on."""

import pytest
import torch
from scipy.stats import beta, kstest
from torchvision import tv_tensors

from yolor_lightning.data.transforms import (
    PAD_VALUE,
    Augment,
    clip_boxes,
    hflip,
    hsv_jitter,
    letterbox,
    letterbox_to_original,
    mixup,
    mixup_ratio,
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


def _flat_sample(size: int, background: int, box: list[int], fill: int, label: int, image_id: int):
    """A ``size`` x ``size`` image of one grey level with one box filled with another."""
    sample = _sample(size, size, [box], first_colour=label, image_id=image_id)
    x0, y0, x1, y1 = box
    sample["image"][:] = background
    sample["image"][:, y0:y1, x0:x1] = fill
    return sample


def test_mixup_blends_the_pixels_and_keeps_both_sets_of_boxes_where_they_are():
    a = _flat_sample(64, background=200, box=[4, 8, 30, 40], fill=120, label=0, image_id=7)
    b = _flat_sample(64, background=40, box=[20, 24, 60, 50], fill=8, label=3, image_id=9)
    out = mixup(a, b, 0.25)
    expected = 0.25 * a["image"].float() + 0.75 * b["image"].float()  # exact: multiples of 4
    assert torch.equal(out["image"], expected.to(torch.uint8))
    assert out["image"][0, 0, 0] == 80 and out["image"][0, 30, 25] == 0.25 * 120 + 0.75 * 8
    assert isinstance(out["image"], tv_tensors.Image)
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes)
    assert out["boxes"].tolist() == [[4, 8, 30, 40], [20, 24, 60, 50]]
    assert out["labels"].tolist() == [0, 3]
    for k in ("iscrowd", "area", "identities"):
        assert torch.equal(out[k], torch.cat([a[k], b[k]]))
    assert (out["image_id"], out["file_name"]) == (7, "7.jpg")


def test_mixup_rounds_to_the_nearest_level_and_refuses_two_sizes():
    a = _flat_sample(16, background=255, box=[0, 0, 4, 4], fill=0, label=0, image_id=1)
    b = _flat_sample(16, background=0, box=[0, 0, 4, 4], fill=255, label=1, image_id=2)
    out = mixup(a, b, 0.7)  # 178.5 (rounds up), and 76.5 in the box
    assert out["image"][0, 8, 8] == 179 and out["image"][0, 1, 1] == 77
    with pytest.raises(ValueError, match="mixup needs two images of one size"):
        mixup(a, _flat_sample(32, 0, [0, 0, 4, 4], 1, 0, 3), 0.5)


def test_mixup_ratio_is_beta_8_8_and_repeats_with_its_generator():
    generator = torch.Generator().manual_seed(0)
    draws = [mixup_ratio(generator) for _ in range(2000)]
    assert kstest(draws, beta(8, 8).cdf).pvalue > 0.01
    assert all(0 < r < 1 for r in draws)
    assert mixup_ratio(torch.Generator().manual_seed(5)) == mixup_ratio(
        torch.Generator().manual_seed(5)
    )


def _tiles(first_colour: int, image_id: int) -> list[dict]:
    return [
        _sample(120, 200, [[20, 20, 80, 70]], first_colour=first_colour, image_id=image_id),
        _sample(200, 160, [[30, 40, 110, 150]], first_colour=first_colour + 1),
        _sample(150, 150, [[10, 60, 70, 120]], first_colour=first_colour + 2),
        _sample(90, 180, [[100, 20, 170, 80]], first_colour=first_colour + 3),
    ]


def test_train_transform_mixes_its_mosaic_with_the_partners_mosaic_before_the_jitter():
    augment = Augment(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, flip_lr=0.0, mixup=1.0)
    samples, partners = _tiles(0, image_id=7), _tiles(2, image_id=8)
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    out = train_transform(samples, 128, augment, generators[0], partners, generators[1])
    mixing = torch.Generator().manual_seed(2)
    partner_mosaic = mosaic(partners, 128, mixing)
    own = mosaic(samples, 128, torch.Generator().manual_seed(1))
    expected = mixup(own, partner_mosaic, mixup_ratio(mixing))
    assert torch.equal(out["image"], expected["image"])
    assert torch.equal(out["boxes"], expected["boxes"])
    assert len(out["labels"]) == len(own["labels"]) + len(partner_mosaic["labels"])
    assert out["image_id"] == 7

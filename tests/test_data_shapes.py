"""The generated ``shapes`` dataset: deterministic, COCO-valid, atomic in its cache folder."""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from yolor_lightning.data import shapes
from yolor_lightning.data.shapes import CATEGORIES, ShapesConfig, dataset_dir, ensure_shapes

TINY = ShapesConfig(num_train=24, num_val=12)


def _annotations(folder: Path, split: str) -> dict:
    return json.loads((folder / "annotations" / f"instances_{split}.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_shapes(tmp_path_factory.mktemp("cache"), TINY, workers=1)


def test_generation_is_deterministic_from_seed(tiny, tmp_path):
    again = ensure_shapes(tmp_path / "a", TINY, workers=2)
    assert _annotations(again, "val") == _annotations(tiny, "val")
    assert (again / "val" / "000003.jpg").read_bytes() == (tiny / "val" / "000003.jpg").read_bytes()
    other = ensure_shapes(tmp_path / "b", ShapesConfig(seed=1, num_train=1, num_val=12), workers=1)
    assert _annotations(other, "val")["annotations"] != _annotations(tiny, "val")["annotations"]


def test_cache_folder_is_keyed_by_config(tmp_path):
    same, other = ShapesConfig(num_train=24, num_val=12), ShapesConfig(num_train=25)
    assert dataset_dir(tmp_path, TINY) == dataset_dir(tmp_path, same)
    assert dataset_dir(tmp_path, TINY) != dataset_dir(tmp_path, other)


def test_annotations_are_complete_and_inside_the_image(tiny):
    for split, count in (("train", TINY.num_train), ("val", TINY.num_val)):
        coco = _annotations(tiny, split)
        assert len(coco["images"]) == count
        assert [c["id"] for c in coco["categories"]] == list(range(1, len(CATEGORIES) + 1))
        per_image = defaultdict(int)
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert min(x, y) >= 0 and max(x + w, y + h) <= TINY.image_size
            assert 0 < ann["area"] <= w * h  # visible pixels, not the box
            assert ann["iscrowd"] == 0
            assert 1 <= ann["track_id"] <= TINY.num_identities
            per_image[ann["image_id"]] += 1
        assert all(1 <= n <= TINY.max_objects for n in per_image.values())
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_all_coco_area_buckets_are_populated(tiny):
    areas = np.array([a["area"] for a in _annotations(tiny, "train")["annotations"]])
    assert (areas < 32**2).sum() > 10
    assert ((areas >= 32**2) & (areas < 96**2)).sum() > 10
    assert (areas >= 96**2).sum() > 3


def test_an_identity_keeps_its_category_and_recurs_across_splits(tiny):
    category_of = {}
    tracks = {}
    for split in ("train", "val"):
        anns = _annotations(tiny, split)["annotations"]
        for ann in anns:
            assert category_of.setdefault(ann["track_id"], ann["category_id"]) == ann["category_id"]
        tracks[split] = {a["track_id"] for a in anns}
    assert len(tracks["train"] & tracks["val"]) >= 10


def test_occluded_objects_report_only_their_visible_pixels():
    below, above = np.ones((4, 4), bool), np.ones((2, 2), bool)  # masks within their windows
    visible = shapes._visible(8, [(0, 0, 4, 4), (2, 2, 4, 4)], [below, above])
    assert visible[0].sum() == 12 and visible[1].sum() == 4


def test_interrupted_generation_is_never_taken_as_complete(tmp_path, monkeypatch):
    config = ShapesConfig(num_train=2, num_val=1)

    def crash(out, *args):
        (out / "train").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_generate", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(tmp_path, config)
    assert not dataset_dir(tmp_path, config).exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    folder = ensure_shapes(tmp_path, config, workers=1)
    assert len(_annotations(folder, "val")["images"]) == 1


def test_losing_the_rename_race_uses_the_winners_folder(tmp_path, monkeypatch):
    config = ShapesConfig(num_train=2, num_val=1)
    final = dataset_dir(tmp_path, config)
    generate = shapes._generate

    def other_rank_wins(out, *args):
        generate(out, *args)
        final.mkdir()
        (final / "winner").touch()

    monkeypatch.setattr(shapes, "_generate", other_rank_wins)
    assert ensure_shapes(tmp_path, config, workers=1) == final
    assert (final / "winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]

"""COCO-format reader: label mapping, and every bad input named (or skipped and counted)."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from yolor_lightning.data.coco import CocoDetection, CocoFormatError, UnreadableImageError
from yolor_lightning.data.datamodule import DetectionDataset, collate_batch
from yolor_lightning.data.shapes import ShapesConfig, ensure_shapes


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    config = ShapesConfig(num_train=1, num_val=4)
    return ensure_shapes(tmp_path_factory.mktemp("cache"), config, workers=1)


@pytest.fixture
def split(source, tmp_path) -> tuple[Path, Path, dict]:
    """A writable copy of the val split: (ann_file, image_dir, parsed annotations)."""
    shutil.copytree(source / "val", tmp_path / "images")
    ann_file = tmp_path / "instances.json"
    shutil.copy(source / "annotations" / "instances_val.json", ann_file)
    return ann_file, tmp_path / "images", json.loads(ann_file.read_text())


def test_category_ids_map_to_sorted_contiguous_labels(split):
    ann_file, image_dir, coco = split
    coco["categories"] = [{"id": 40, "name": "b"}, {"id": 7, "name": "a"}, {"id": 90, "name": "c"}]
    ids = [40, 7, 90]
    for i, ann in enumerate(coco["annotations"]):
        ann["category_id"] = ids[i % 3]
    ann_file.write_text(json.dumps(coco))
    dataset = CocoDetection(ann_file, image_dir, identity_key="track_id")
    assert dataset.category_ids == [7, 40, 90] and dataset.class_names == ["a", "b", "c"]
    first = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    sample = dataset[0]
    expected = [{7: 0, 40: 1, 90: 2}[a["category_id"]] for a in first]
    assert sample["labels"].tolist() == expected
    x, y, w, h = first[0]["bbox"]
    assert sample["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape[0] == 3
    assert sample["identities"].tolist() == [a["track_id"] for a in first]


def test_identities_fall_back_to_categories_and_say_so_once(split, caplog):
    ann_file, image_dir, coco = split
    for ann in coco["annotations"][::2]:
        del ann["track_id"]
    ann_file.write_text(json.dumps(coco))
    with caplog.at_level(logging.WARNING, logger="yolor_lightning.data.coco"):
        dataset = CocoDetection(ann_file, image_dir, identity_key="track_id")
    (warning,) = caplog.records
    lacking = len(coco["annotations"][::2])
    assert f"{lacking} of {len(coco['annotations'])} annotations have no 'track_id'" in (
        warning.getMessage()
    )
    assert str(ann_file) in warning.getMessage()
    first = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    labels = dataset[0]["labels"].tolist()
    expected = [a.get("track_id", label) for a, label in zip(first, labels, strict=True)]
    assert dataset[0]["identities"].tolist() == expected


def test_identities_are_categories_without_an_identity_key(split):
    ann_file, image_dir, _ = split
    sample = CocoDetection(ann_file, image_dir)[0]
    assert sample["identities"].tolist() == sample["labels"].tolist()


def test_malformed_json_names_the_file_and_the_position(split):
    ann_file, image_dir, _ = split
    ann_file.write_text('{"images": [}')
    where = r"instances\.json: malformed JSON at line 1 column 13"
    with pytest.raises(CocoFormatError, match=where):
        CocoDetection(ann_file, image_dir)


def test_missing_image_file_is_named_or_skipped(split):
    ann_file, image_dir, coco = split
    missing = coco["images"][1]["file_name"]
    (image_dir / missing).unlink()
    where = f"instances.json: image {coco['images'][1]['id']}: image file .*{missing}"
    with pytest.raises(CocoFormatError, match=where):
        CocoDetection(ann_file, image_dir)
    dataset = CocoDetection(ann_file, image_dir, skip_bad=True)
    assert len(dataset) == len(coco["images"]) - 1
    assert dataset.skipped == {"missing_image": 1} and dataset.num_skipped == 1


def _set_bbox(bbox):
    def mutate(ann):
        ann["bbox"] = bbox

    return mutate


@pytest.mark.parametrize(
    ("mutate", "reason", "message"),
    [
        (_set_bbox([250.0, 10.0, 20.0, 20.0]), "bad_box", "outside the 256x256 image"),
        (_set_bbox([-3.0, 10.0, 20.0, 20.0]), "bad_box", "outside the 256x256 image"),
        (_set_bbox([10.0, 10.0, 0.0, 20.0]), "bad_box", "non-positive width/height"),
        (_set_bbox([10.0, 10.0, 20.0, -1.0]), "bad_box", "non-positive width/height"),
        (lambda ann: ann.update(category_id=99), "unknown_category", "unknown category_id 99"),
        (lambda ann: ann.update(image_id=12345), "unknown_image", "unknown image_id"),
    ],
)
def test_bad_annotation_names_the_file_and_annotation_or_is_skipped(split, mutate, reason, message):
    ann_file, image_dir, coco = split
    bad = coco["annotations"][2]
    mutate(bad)
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(
        CocoFormatError, match=rf"instances\.json: annotation {bad['id']} .*{message}"
    ):
        CocoDetection(ann_file, image_dir)
    dataset = CocoDetection(ann_file, image_dir, skip_bad=True)
    assert dataset.skipped == {reason: 1}
    kept = sum(len(dataset[i]["boxes"]) for i in range(len(dataset)))
    assert kept == len(coco["annotations"]) - 1


def test_box_within_one_pixel_of_the_border_is_accepted(split):
    ann_file, image_dir, coco = split
    coco["annotations"][0]["bbox"] = [-0.5, 0.0, 20.0, 256.8]
    ann_file.write_text(json.dumps(coco))
    assert CocoDetection(ann_file, image_dir).num_skipped == 0


def test_corrupt_image_is_named_when_read_or_dropped_and_counted_in_the_batch(split):
    ann_file, image_dir, coco = split
    corrupt = image_dir / coco["images"][1]["file_name"]
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    dataset = CocoDetection(ann_file, image_dir)
    with pytest.raises(UnreadableImageError, match=corrupt.name):
        dataset[1]
    with pytest.raises(UnreadableImageError, match=corrupt.name):
        DetectionDataset(dataset, 64)[1]

    skipping = DetectionDataset(CocoDetection(ann_file, image_dir, skip_bad=True), 64)
    batch = collate_batch([skipping[i] for i in range(len(skipping))], image_size=64, num_classes=8)
    assert batch["num_skipped"] == 1
    assert batch["images"].shape == (len(coco["images"]) - 1, 3, 64, 64)
    assert [m["image_id"] for m in batch["meta"]] == [
        im["id"] for i, im in enumerate(coco["images"]) if i != 1
    ]

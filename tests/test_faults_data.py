"""Hostile or careless COCO files: every bad entry is named (file and image or annotation id) or,
with ``data.skip_bad``, skipped and counted by reason, up to results.json; nothing is read from
outside the image folder; a split with nothing left stops the run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runs import TINY, offline_environment, run

from yolor_lightning.data.coco import CocoDetection, CocoFormatError, UnreadableImageError
from yolor_lightning.data.datamodule import DetectionDataset
from yolor_lightning.data.shapes import ShapesConfig, ensure_shapes
from yolor_lightning.data.skipping import SkippedSample

# The dataset of cli_runs.TINY, generated into each end-to-end test's own cache.
TINY_SHAPES = ShapesConfig(num_train=32, num_val=16, image_size=64)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return ensure_shapes(tmp_path_factory.mktemp("cache"), ShapesConfig(num_train=1, num_val=4))


@pytest.fixture
def split(source, tmp_path) -> tuple[Path, Path, dict]:
    """A writable copy of a 4-image split: (ann_file, image_dir, parsed annotations)."""
    shutil.copytree(source / "val", tmp_path / "images")
    ann_file = tmp_path / "instances.json"
    shutil.copy(source / "annotations" / "instances_val.json", ann_file)
    return ann_file, tmp_path / "images", json.loads(ann_file.read_text())


def _image(key: str, value: object) -> Callable[[dict], None]:
    def mutate(coco: dict) -> None:
        coco["images"][1][key] = value

    return mutate


def _without_width(coco: dict) -> None:
    del coco["images"][1]["width"]


def _duplicate_id(coco: dict) -> None:
    """Images 1 and 2 under one id (as when two files are merged), with their annotations."""
    old, new = coco["images"][1]["id"], coco["images"][2]["id"]
    coco["images"][1]["id"] = new
    for ann in coco["annotations"]:
        ann["image_id"] = new if ann["image_id"] == old else ann["image_id"]


def _box(bbox: list) -> Callable[[dict], None]:
    def mutate(coco: dict) -> None:
        first = next(a for a in coco["annotations"] if a["image_id"] == coco["images"][1]["id"])
        first["bbox"] = bbox

    return mutate


@pytest.mark.parametrize(
    ("mutate", "reason", "message", "images_left"),
    [
        (_image("file_name", "../outside.jpg"), "unsafe_file_name", r"'\.\./outside\.jpg'", 3),
        (_image("file_name", "/etc/hostname"), "unsafe_file_name", "'/etc/hostname' is absol", 3),
        (_without_width, "bad_image", "no width", 3),
        (_image("height", "256"), "bad_image", "height '256' is not a positive integer", 3),
        (_duplicate_id, "duplicate_image_id", "is used by 2 images", 2),
        (
            _box([10.0, 10.0, float("nan"), 20.0]),
            "bad_box",
            r"\[10.0, 10.0, nan, 20.0\] is not f",
            4,
        ),
        (
            _box([10.0, 10.0, float("inf"), 20.0]),
            "bad_box",
            r"\[10.0, 10.0, inf, 20.0\] is not f",
            4,
        ),
        (_box(["10", "10", "20", "20"]), "bad_box", r"is not \[x, y, w, h\] numbers", 4),
    ],
    ids=["dotdot", "absolute", "no_width", "height_str", "dup_id", "nan_box", "inf_box", "str_box"],
)
def test_bad_entry_is_named_or_skipped_and_counted(split, mutate, reason, message, images_left):
    ann_file, image_dir, coco = split
    mutate(coco)
    ann_file.write_text(json.dumps(coco))
    image_id = coco["images"][1]["id"]
    with pytest.raises(CocoFormatError, match=rf"instances\.json: .*{image_id}.*{message}"):
        CocoDetection(ann_file, image_dir)
    dataset = CocoDetection(ann_file, image_dir, skip_bad=True)
    assert dataset.skipped == {reason: 2 if reason == "duplicate_image_id" else 1}
    assert len(dataset) == images_left


def test_a_file_name_leaving_the_image_folder_is_never_read(split):
    """The file exists outside the image folder; it is refused all the same."""
    ann_file, image_dir, coco = split
    outside = image_dir.parent / "outside.jpg"
    shutil.copy(image_dir / coco["images"][1]["file_name"], outside)
    coco["images"][1]["file_name"] = "../outside.jpg"
    ann_file.write_text(json.dumps(coco))
    dataset = CocoDetection(ann_file, image_dir, skip_bad=True)
    assert "../outside.jpg" not in [dataset[i]["file_name"] for i in range(len(dataset))]


def test_duplicate_image_ids_name_both_images_not_an_unknown_image(split):
    ann_file, image_dir, coco = split
    _duplicate_id(coco)
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(CocoFormatError) as error:
        CocoDetection(ann_file, image_dir)
    for entry in coco["images"][1:3]:
        assert repr(entry["file_name"]) in str(error.value)
    assert "unknown image_id" not in str(error.value)


def test_a_file_that_is_not_utf8_names_the_file_and_the_byte(split):
    ann_file, image_dir, coco = split
    ann_file.write_bytes(json.dumps(coco).replace("circle", "c\xefrcle").encode("latin-1"))
    with pytest.raises(CocoFormatError, match=r"instances\.json: not UTF-8 text \(byte 0xef"):
        CocoDetection(ann_file, image_dir)


def test_json_size_that_differs_from_the_image_is_named_when_read_or_skipped(split):
    ann_file, image_dir, coco = split
    coco["images"][1]["width"] = 300  # the image is 256x256; its boxes still fit
    ann_file.write_text(json.dumps(coco))
    image_id = coco["images"][1]["id"]
    with pytest.raises(
        UnreadableImageError,
        match=rf"image {image_id}: .* is 256x256 but the annotation .* 300x256",
    ):
        CocoDetection(ann_file, image_dir)[1]
    skipping = DetectionDataset(CocoDetection(ann_file, image_dir, skip_bad=True), 64)
    assert skipping[1] == SkippedSample("image_size_mismatch", image_id)


def test_a_split_with_every_image_skipped_stops(split):
    ann_file, image_dir, coco = split
    for entry in coco["images"]:
        entry["file_name"] = "../" + entry["file_name"]
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(CocoFormatError, match=r"no usable image left .*'unsafe_file_name': 4"):
        CocoDetection(ann_file, image_dir, skip_bad=True)


def _tiny_dataset(cache: Path) -> tuple[dict, Path]:
    """The CLI's tiny shapes dataset in ``cache``: (training annotations, training images)."""
    folder = ensure_shapes(cache, TINY_SHAPES, workers=1)
    return json.loads((folder / "annotations" / "instances_train.json").read_text()), folder


@pytest.mark.slow
def test_skipped_items_are_counted_by_reason_in_results_and_the_log(tmp_path):
    coco, folder = _tiny_dataset(tmp_path / "cache")
    (folder / "train" / coco["images"][0]["file_name"]).write_bytes(b"not a jpeg")
    coco["annotations"][-1]["bbox"] = [1.0, 1.0, float("nan"), 4.0]
    (folder / "annotations" / "instances_train.json").write_text(json.dumps(coco))

    arguments = [*TINY, "data.skip_bad=true", "trainer.max_epochs=1", "logger=csv"]
    environment = offline_environment(tmp_path / "cache")
    result = run("yolor_lightning", *arguments, "hydra.run.dir=run", cwd=tmp_path, env=environment)
    skipped = json.loads((tmp_path / "run" / "results.json").read_text())["data"]["skipped"]
    expected = {"train": {"bad_box": 1, "unreadable_image": 1}, "val": {}}
    assert skipped == expected
    assert f"data.skip_bad skipped (split: {{reason: count}}): {expected}" in result.stdout


@pytest.mark.slow
def test_a_training_split_with_every_image_unreadable_stops_the_run(tmp_path):
    coco, folder = _tiny_dataset(tmp_path / "cache")
    for entry in coco["images"]:
        (folder / "train" / entry["file_name"]).write_bytes(b"not a jpeg")

    arguments = [*TINY, "data.skip_bad=true", "trainer.max_epochs=1", "logger=csv"]
    environment = offline_environment(tmp_path / "cache")
    result = run(
        "yolor_lightning",
        *arguments,
        "hydra.run.dir=run",
        cwd=tmp_path,
        env=environment,
        check=False,
    )
    assert result.returncode != 0
    assert "all 32 images of the train split are unusable" in result.stderr
    assert "{'unreadable_image': 32}" in result.stderr
    results = tmp_path / "run" / "results.json"  # if any, it records the failure: no metrics
    assert not results.exists() or "metrics" not in json.loads(results.read_text())

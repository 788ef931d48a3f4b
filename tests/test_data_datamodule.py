"""DataModules built from the real configs with Hydra, and the batch format they produce."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from yolor_lightning.config import compose_config
from yolor_lightning.data.datamodule import CocoDataModule, ShapesDataModule
from yolor_lightning.data.replay import ReplayedBatches
from yolor_lightning.data.shapes import CATEGORIES, ShapesConfig, ensure_shapes

CONF = Path(__file__).parents[1] / "conf" / "data"
TINY = {"num_train": 12, "num_val": 6}
REQUIRED = {"_target_", "name", "root", "num_classes", "image_size", "batch_size", "num_workers"}
REQUIRED |= {"skip_bad", "augment", "identity_key"}


def _config(name: str, **overrides):
    """The data group as Hydra composes it (its schema included), with ``overrides``."""
    return OmegaConf.merge(compose_config([f"data={name}"]).data, overrides)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    ensure_shapes(root, ShapesConfig(**TINY), workers=1)
    return root


@pytest.fixture(scope="module")
def coco_root(shapes_root, tmp_path_factory) -> Path:
    """The tiny shapes set laid out as COCO 2017."""
    folder = next(shapes_root.glob("shapes-*"))
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        shutil.copytree(folder / split, root / f"{split}2017")
        shutil.copy(
            folder / "annotations" / f"instances_{split}.json",
            root / "annotations" / f"instances_{split}2017.json",
        )
    return root


@pytest.mark.parametrize("name", ["shapes", "coco"])
def test_data_configs_have_the_keys_the_cli_relies_on(name):
    config = OmegaConf.load(CONF / f"{name}.yaml")
    assert set(config) >= REQUIRED and config.name == name
    assert set(config.augment) == {"mosaic", "mixup", "hsv_h", "hsv_s", "hsv_v", "flip_lr"}


def test_shapes_datamodule_knows_its_classes_at_construction(tmp_path):
    dm = instantiate(_config("shapes", root=str(tmp_path), shapes=TINY))
    assert isinstance(dm, ShapesDataModule)
    assert dm.num_classes == len(dm.class_names) == len(CATEGORIES)
    assert dm.category_ids == list(range(1, len(CATEGORIES) + 1))
    assert list(tmp_path.iterdir()) == []  # nothing generated before prepare_data


def test_shapes_num_classes_mismatch_is_an_error(tmp_path):
    with pytest.raises(InstantiationException, match=r"set data\.num_classes=8"):
        instantiate(_config("shapes", root=str(tmp_path), num_classes=80))


def test_shapes_batches_have_the_documented_format(shapes_root):
    dm = instantiate(
        _config("shapes", root=str(shapes_root), shapes=TINY, batch_size=4, num_workers=0),
        targets=["det", "cls", "emb"],
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_skipped == {"train": 0, "val": 0}

    train = next(iter(dm.train_dataloader()))
    assert train["images"].shape == (4, 3, 256, 256) and train["images"].dtype == torch.uint8
    assert train["num_skipped"] == 0
    for target in train["targets"]:
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64
        assert ((target["labels"] >= 0) & (target["labels"] < dm.num_classes)).all()
        assert len(target["identities"]) == len(target["labels"])
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 256)).all()
    assert all("gt" not in m for m in train["meta"])
    assert train["image_labels"].shape == (4, dm.num_classes)

    val = next(iter(dm.val_dataloader()))
    meta = val["meta"][0]
    assert meta["scale"] == 1.0 and meta["pad"] == (0.0, 0.0) and meta["orig_size"] == (256, 256)
    gt = meta["gt"]
    assert gt["boxes"].dtype == torch.float32 and gt["area"].dtype == torch.float32
    assert gt["labels"].dtype == gt["iscrowd"].dtype == torch.int64
    torch.testing.assert_close(val["targets"][0]["boxes"], gt["boxes"])
    for row, image in enumerate(val["meta"]):  # every category in the file, crowd included
        present = torch.zeros(dm.num_classes)
        present[image["gt"]["labels"]] = 1
        assert torch.equal(val["image_labels"][row], present)

    test = next(iter(dm.test_dataloader()))  # no test split: the val split
    assert [m["image_id"] for m in test["meta"]] == [m["image_id"] for m in val["meta"]]


def test_batches_carry_only_the_requested_targets(shapes_root):
    dm = instantiate(
        _config("shapes", root=str(shapes_root), shapes=TINY, batch_size=4, num_workers=0),
        targets=["cls"],
    )
    val = next(iter(dm.val_dataloader()))
    assert "image_labels" in val and all("gt" not in m for m in val["meta"])
    assert all(set(target) == {"boxes", "labels"} for target in val["targets"])


def test_unknown_target_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(
        InstantiationException, match=r"targets=\['det', 'seg'\] \(task\.targets\).*'emb'"
    ):
        instantiate(_config("shapes", root=str(tmp_path)), targets=["det", "seg"])


def test_shapes_identities_recur_across_images_in_both_splits(tmp_path):
    """Every identity of the val split is seen in training and most recur within val, so
    retrieval by identity is measurable (a small pool here; the default has 48 identities over
    300 val images)."""
    config = ShapesConfig(num_train=24, num_val=12, num_identities=6, image_size=64)
    folder = ensure_shapes(tmp_path, config, workers=1)
    images_of: dict[str, dict[int, set[int]]] = {}
    for split in ("train", "val"):
        coco = json.loads((folder / "annotations" / f"instances_{split}.json").read_text())
        images_of[split] = {}
        for ann in coco["annotations"]:
            images_of[split].setdefault(ann["track_id"], set()).add(ann["image_id"])
    assert set(images_of["val"]) == set(images_of["train"]) == set(range(1, 7))
    assert all(len(images) >= 2 for images in images_of["val"].values())


def test_loaders_with_workers_are_persistent(shapes_root):
    dm = instantiate(
        _config("shapes", root=str(shapes_root), shapes=TINY, batch_size=6, val_cache_mb=0)
    )
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.num_workers == 2 and loader.persistent_workers
        assert len(next(iter(loader))["images"]) == 6


def _identical(a, b) -> bool:
    """Equal nested batches: tensors element for element, everything else by ``==``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_validation_split_is_loaded_in_the_background_and_replayed(shapes_root):
    """Within ``data.val_cache_mb`` the split is loaded once, from the moment it is handed out
    and without a pass asking for it (its workers then exit); every pass, a stopped one
    included, yields the very same batches, equal to a plain loader's."""
    dm = instantiate(_config("shapes", root=str(shapes_root), shapes=TINY, batch_size=4))
    replayed = dm.val_dataloader()
    assert replayed is dm.val_dataloader()  # one cache for fit's validations and a final pass
    assert replayed.loader.num_workers == 2 and not replayed.loader.persistent_workers
    assert len(replayed) == 2  # 6 images in batches of 4
    deadline = time.monotonic() + 60
    while not replayed.complete and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replayed.complete
    stopped = next(iter(replayed))
    first = list(replayed)
    assert first[0] is stopped
    second = list(replayed)
    assert all(a is b for a, b in zip(first, second, strict=True))
    plain = instantiate(
        _config("shapes", root=str(shapes_root), shapes=TINY, batch_size=4, val_cache_mb=0)
    )
    assert _identical(first, list(plain.val_dataloader()))


def test_an_error_in_the_background_loading_is_raised_by_the_pass():
    """A dataset that fails at its second item: the pass yields the first batch, then raises the
    loader's own error; so does every later pass."""

    class FailingAtSecond(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> torch.Tensor:
            if index == 1:
                raise ValueError("image 1 is unreadable")
            return torch.tensor([index])

    replayed = ReplayedBatches(torch.utils.data.DataLoader(FailingAtSecond(), batch_size=1))
    batches = iter(replayed)
    assert torch.equal(next(batches), torch.tensor([[0]]))
    for passes in (batches, iter(replayed)):
        with pytest.raises(ValueError, match="image 1 is unreadable"):
            list(passes)


def test_validation_split_over_the_memory_budget_is_loaded_every_time(shapes_root):
    # TINY's 6 validation images at 256 px take 6 x 3 x 256 x 256 bytes = 1.125 MiB
    over = _config("shapes", root=str(shapes_root), shapes=TINY, batch_size=4, val_cache_mb=1)
    loader = instantiate(over).val_dataloader()
    assert isinstance(loader, torch.utils.data.DataLoader) and loader.persistent_workers
    within = _config("shapes", root=str(shapes_root), shapes=TINY, batch_size=4, val_cache_mb=1.2)
    assert not isinstance(instantiate(within).val_dataloader(), torch.utils.data.DataLoader)


def test_coco_root_override_works_and_letterboxes_to_the_training_size(coco_root):
    dm = instantiate(_config("coco", root=str(coco_root), num_classes=8, num_workers=0))
    assert isinstance(dm, CocoDataModule) and dm.class_names is None
    dm.setup("validate")
    assert dm.class_names == list(CATEGORIES)
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape[-2:] == (640, 640)
    meta = batch["meta"][0]
    assert meta["scale"] == 2.5 and meta["orig_size"] == (256, 256)
    torch.testing.assert_close(batch["targets"][0]["boxes"], meta["gt"]["boxes"] * 2.5)


def test_coco_num_classes_must_match_the_annotations(coco_root):
    dm = instantiate(_config("coco", root=str(coco_root)))
    with pytest.raises(ValueError, match=r"instances_val2017\.json has 8 categories .* is 80"):
        dm.setup("validate")


def test_coco_without_root_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO val images not found"):
        CocoDataModule(name="coco", root=str(tmp_path), num_classes=80).setup("validate")


def test_skipped_annotations_are_counted_per_split(coco_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    ann_file = root / "annotations" / "instances_val2017.json"
    coco = json.loads(ann_file.read_text())
    coco["annotations"][0]["category_id"] = 99
    ann_file.write_text(json.dumps(coco))
    dm = instantiate(_config("coco", root=str(root), num_classes=8, skip_bad=True))
    dm.setup("validate")
    assert dm.num_skipped == {"val": 1}


def test_crowd_boxes_are_kept_in_gt_but_not_in_targets(coco_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    ann_file = root / "annotations" / "instances_val2017.json"
    coco = json.loads(ann_file.read_text())
    first = coco["images"][0]["id"]
    crowd = next(a for a in coco["annotations"] if a["image_id"] == first)
    crowd["iscrowd"] = 1
    ann_file.write_text(json.dumps(coco))
    dm = instantiate(_config("coco", root=str(root), num_classes=8, num_workers=0))
    batch = next(iter(dm.val_dataloader()))
    gt = batch["meta"][0]["gt"]
    assert gt["iscrowd"].sum() == 1
    assert len(batch["targets"][0]["boxes"]) == len(gt["boxes"]) - 1

"""At each validation a run shows, on W&B and in its folder, a panel of validation images with
ground-truth and predicted boxes, and its implicit vectors and pr heatmap."""

from __future__ import annotations

from pathlib import Path

import pytest
from torchvision.io import decode_image

from tests.cli_runs import TINY
from tests.wandb_records import history
from yolor_lightning.callbacks import ValidationMedia
from yolor_lightning.config import compose_config
from yolor_lightning.data.shapes import CATEGORIES
from yolor_lightning.train import build_callbacks, train

STEPS = 4  # TINY: 32 training images in batches of 8, one epoch


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch YOLOR-CSP run (fa add, pr mul) logged to an offline W&B run."""
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        overrides = ["+experiment=yolor_csp", *TINY, "trainer.max_epochs=1"]
        train(compose_config([*overrides, f"output_dir={output_dir}"]))
    return output_dir


@pytest.mark.slow
def test_the_run_folder_holds_the_panel_and_the_implicit_figures(run_folder):
    (step,) = (run_folder / "media").iterdir()  # one validation; none for the sanity check
    assert step.name == f"step_{STEPS:07d}"
    names = sorted(path.name for path in step.iterdir())
    assert names == [
        "implicit_vectors.png",
        "pr_heatmap.png",
        "val_0.png",
        "val_1.png",
        "val_2.png",
        "val_3.png",
    ]
    assert decode_image(str(step / "val_0.png")).shape == (3, 64, 64)


@pytest.mark.slow
def test_the_offline_wandb_run_holds_boxed_images_and_implicit_figures(run_folder):
    (offline,) = run_folder.glob("wandb/offline-run-*")
    (row,) = [row for row in history(offline) if "val/examples._type" in row]  # keys flattened
    assert row["trainer/global_step"] == STEPS
    assert row["val/examples._type"] == "images/separated" and row["val/examples.count"] == 4
    assert set(row["val/examples.all_boxes"][0]) == {"ground_truth", "predictions"}
    assert row["implicit/vectors._type"] == row["implicit/pr_heatmap._type"] == "image-file"
    files = {path.relative_to(offline / "files").parent for path in offline.rglob("*.png")}
    assert files == {Path("media/images/val"), Path("media/images/implicit")}
    # the box data W&B draws over the images: 4 images, ground truth and predictions
    boxes = list(offline.glob("files/media/metadata/boxes2D/val/*.boxes2D.json"))
    assert len(boxes) >= 4  # equal panels share a file (named by their hash)
    captions = "".join(path.read_text() for path in boxes)
    assert any(f'"box_caption":"{name}' in captions for name in CATEGORIES)


def test_media_is_switched_off_with_media_null(tmp_path):
    on, _ = build_callbacks(compose_config([]).callbacks, tmp_path)
    off, _ = build_callbacks(compose_config(["callbacks.media=null"]).callbacks, tmp_path)
    assert any(isinstance(callback, ValidationMedia) for callback in on)
    assert not any(isinstance(callback, ValidationMedia) for callback in off)

"""End to end: a real Trainer trains the tiny model on a tiny generated shapes dataset."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolor_lightning.analysis.complexity import count_parameters
from yolor_lightning.config import compose_config
from yolor_lightning.models import build_yolov4_csp
from yolor_lightning.tasks.evaluation import COCO_STAT_NAMES
from yolor_lightning.train import train

TINY_RUN = [
    "data.shapes.num_train=24",
    "data.shapes.num_val=8",
    "data.shapes.image_size=128",
    "data.image_size=128",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=null",
    # A short ramp so that the EMA lags the live weights visibly within a few steps.
    "callbacks.ema.ramp_steps=1",
    "callbacks.ema.decay=0.9",
]
STEPS_PER_EPOCH = 3  # 24 images / batch 8


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """One epoch, then the same run folder resumed from ``last`` up to two epochs."""
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        common = [*TINY_RUN, f"output_dir={output_dir}"]
        first = train(compose_config([*common, "trainer.max_epochs=1"]))
        second = train(compose_config([*common, "trainer.max_epochs=2", "ckpt_path=last"]))
    return output_dir, first, second


@pytest.mark.slow
def test_results_json_records_choices_metrics_and_cost(resumed_run):
    output_dir, _, results = resumed_run
    assert json.loads((output_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["experiment"] == "default"
    assert results["choices"] == {
        "model": "yolov4_csp",
        "size": "tiny",
        "task": "det",
        "data": "shapes",
        "seed": 0,
        "sites": {},
        "implicit": "none",
    }
    for name in COCO_STAT_NAMES:
        assert -1.0 <= results["metrics"][name] <= 1.0
    assert results["model"]["params"] == count_parameters(build_yolov4_csp("tiny", 8))
    assert results["model"]["gflops"] > 0
    assert results["model"]["params_folded"] == results["model"]["params"]
    assert results["model"]["gflops_folded"] == results["model"]["gflops"]
    assert results["data"]["skipped"] == {"train": {}, "val": {}}
    glibc = platform.libc_ver()[0] == "glibc"  # trainer.keep_freed_memory is on by default
    assert results["environment"]["malloc_keeps_freed_memory"] is glibc


@pytest.mark.slow
def test_resume_from_last_continues_the_same_run(resumed_run):
    _, first, second = resumed_run
    assert (first["epochs"], first["steps"]) == (1, STEPS_PER_EPOCH)
    assert (second["epochs"], second["steps"]) == (2, 2 * STEPS_PER_EPOCH)


@pytest.mark.slow
def test_checkpoints_hold_ema_weights_and_no_temporary_files(resumed_run):
    output_dir, _, results = resumed_run
    folder = output_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert results["best_checkpoint"] == str(folder / "best.ckpt")
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2 * STEPS_PER_EPOCH  # the latest epoch, not the best
    ema, live = checkpoint["state_dict"], checkpoint["current_model_state"]
    weights = [k for k, v in ema.items() if v.is_floating_point() and "running" not in k]
    assert any(not torch.equal(ema[k], live[k]) for k in weights)


@pytest.mark.slow
def test_csv_and_offline_wandb_logs_are_written(resumed_run):
    output_dir, _, _ = resumed_run
    with (output_dir / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("train/loss") for row in rows)
    # the resumed run appended to the first attempt's history: both epochs' validations are there
    assert {row["epoch"] for row in rows if row.get("val/AP")} >= {"0", "1"}
    assert sorted(output_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_cli_writes_run_folders_under_outputs_and_multirun_without_chdir(tmp_path: Path):
    command = [
        sys.executable,
        "-m",
        "yolor_lightning",
        *TINY_RUN,
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    (single,) = tmp_path.glob("outputs/*/*/results.json")
    results = json.loads(single.read_text())
    assert results["epochs"] == 1
    assert Path(results["config"]["output_dir"]) == single.parent

    multirun = [*command[:3], "-m", *command[3:], "seed=0,1"]
    subprocess.run(multirun, cwd=tmp_path, check=True, capture_output=True)
    jobs = sorted(tmp_path.glob("multirun/*/*/*/results.json"))
    assert [json.loads(p.read_text())["choices"]["seed"] for p in jobs] == [0, 1]
    assert not list(tmp_path.glob("outputs/*/*/*/results.json"))


@pytest.mark.slow
def test_skipped_annotations_are_counted_logged_and_recorded(tmp_path: Path):
    from yolor_lightning.data.shapes import ShapesConfig, ensure_shapes

    cache = tmp_path / "cache"
    shapes = ShapesConfig(seed=0, num_train=24, num_val=8, image_size=128)
    annotations = ensure_shapes(cache, shapes) / "annotations" / "instances_train.json"
    coco = json.loads(annotations.read_text())
    coco["annotations"][0]["bbox"] = [100.0, 100.0, 80.0, 80.0]  # past the 128 px border
    annotations.write_text(json.dumps(coco))

    overrides = [*TINY_RUN, f"data.root={cache}", "data.skip_bad=true", "trainer.max_epochs=1"]
    results = train(compose_config([*overrides, f"output_dir={tmp_path / 'run'}", "logger=csv"]))
    assert results["data"]["skipped"] == {"train": {"bad_box": 1}, "val": {}}
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as handle:
        logged = [row["data/skipped_train"] for row in csv.DictReader(handle)]
    assert [float(value) for value in logged if value] == [1.0]

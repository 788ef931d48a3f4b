"""Distributed data parallel on CPU (2 processes, gloo) through the command line, as a user runs
it: one run gives one results.json and one W&B run; a checkpoint evaluated on 1 and on 2
processes gives the same COCO stats (every validation image counted once, gathered from all
ranks)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_runs import STEPS_PER_EPOCH, TINY, offline_environment, run
from wandb_records import offline_runs

from yolor_lightning.config import compose_config
from yolor_lightning.evaluate import EVALUATION_FILE, evaluate
from yolor_lightning.tasks.evaluation import COCO_STAT_NAMES

# 15 validation images: 2 ranks get 8 and 7. A sampler that evened them out by repeating an
# image (Lightning's default DistributedSampler) would count that image twice.
ODD_VALIDATION_SPLIT = "data.shapes.num_val=15"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp_run")
    environment = offline_environment(tmp_path_factory.getbasetemp() / "cache")
    run(
        "yolor_lightning",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        *TINY,
        cwd=cwd,
        env=environment,
    )
    (folder,) = cwd.glob("outputs/*/*")
    return folder


@pytest.mark.slow
def test_ddp_run_finishes_with_one_results_file_and_one_wandb_run(ddp_run: Path):
    results = json.loads((ddp_run / "results.json").read_text())
    assert results["config"]["trainer"]["devices"] == 2
    assert (results["epochs"], results["steps"]) == (1, STEPS_PER_EPOCH[2])
    assert (ddp_run / "train_ddp_process_1.log").is_file()  # rank 1 ran in this run folder
    environment = results["environment"]  # the processes split the validation: no extra threads
    assert environment["evaluation_threads"] == environment["torch_threads"]
    (wandb_run,) = offline_runs(ddp_run)
    assert wandb_run.summary["final/AP"] == pytest.approx(results["metrics"]["AP"])


@pytest.mark.slow
def test_checkpoint_metrics_are_the_same_on_one_and_two_processes(ddp_run: Path, tmp_path: Path):
    overrides = [*TINY, ODD_VALIDATION_SPLIT, f"ckpt_path={ddp_run / 'checkpoints' / 'best.ckpt'}"]
    one = evaluate(compose_config([*overrides, f"output_dir={tmp_path / 'one'}"]))
    run(
        "yolor_lightning.evaluate",
        *overrides,
        "trainer=ddp_cpu",
        cwd=tmp_path,
        env=offline_environment(Path(os.environ["YOLOR_LIGHTNING_CACHE"])),
    )
    (folder,) = tmp_path.glob("evaluations/*/*")
    two = json.loads((folder / EVALUATION_FILE).read_text())

    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["metrics"]["AP"] > 0 and one["metrics"]["AR100"] > 0  # stats that can differ
    for name in COCO_STAT_NAMES:
        assert two["metrics"][name] == pytest.approx(one["metrics"][name], abs=1e-6), name
    (wandb_run,) = offline_runs(folder)
    assert wandb_run.job_type == "eval"
    assert wandb_run.summary["final/AP"] == pytest.approx(two["metrics"]["AP"])

"""W&B run identity and tags (the offline run folders of real runs are read in test_sweeps,
test_ddp and test_submitit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import wandb

from yolor_lightning.loggers import RUN_ID_FILE, no_wandb_run_left_open, run_tags, wandb_run_id


def test_tags_name_the_task_and_each_implicit_site():
    sites = {"fa": {"operator": "add", "prior": "vector"}, "pr": {"operator": "mul", "prior": "nn"}}
    assert run_tags("jdc", sites) == [
        "task:jdc",
        "site:fa",
        "operator:add",
        "prior:vector",
        "fa:add:vector",
        "site:pr",
        "operator:mul",
        "prior:nn",
        "pr:mul:nn",
    ]


def test_tags_of_a_run_without_implicit_knowledge():
    assert run_tags("det", {}) == ["task:det", "implicit:none"]


def test_run_id_is_kept_in_the_run_folder(tmp_path: Path):
    run_id = wandb_run_id(tmp_path / "run")
    assert wandb_run_id(tmp_path / "run") == run_id
    assert (tmp_path / "run" / RUN_ID_FILE).read_text().strip() == run_id
    assert wandb_run_id(tmp_path / "other run") != run_id


def test_run_id_written_by_an_earlier_start_is_never_replaced(tmp_path: Path):
    (tmp_path / RUN_ID_FILE).parent.mkdir(parents=True)
    (tmp_path / RUN_ID_FILE).write_text("requeued42\n")
    assert wandb_run_id(tmp_path) == "requeued42"
    assert sorted(p.name for p in (tmp_path / RUN_ID_FILE).parent.iterdir()) == ["run-id"]


def test_a_failed_job_leaves_no_wandb_run_open(tmp_path: Path):
    """The next job of a sweep run by the same process must get a W&B run of its own."""
    with pytest.raises(RuntimeError, match="job failed"), no_wandb_run_left_open():
        wandb.init(mode="offline", dir=tmp_path, project="test")
        raise RuntimeError("job failed")
    assert wandb.run is None

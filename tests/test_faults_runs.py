"""Runs as a user runs them, killed and misused: no run loses data, every failure is loud.

Real processes, real files, a real SIGKILL.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_runs import TINY, finish, offline_environment, run, start

from yolor_lightning.atomic import temporary_sibling
from yolor_lightning.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow

THREE_EPOCHS = [*TINY, "trainer.max_epochs=3", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return offline_environment(tmp_path_factory.getbasetemp() / "cache")


def train(folder: Path, *overrides: str, env: dict[str, str], check: bool = True):
    return run(
        "yolor_lightning", *THREE_EPOCHS, f"hydra.run.dir={folder}", *overrides,
        cwd=folder.parent, env=env, check=check,
    )  # fmt: skip


def csv_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def losses_by_step(rows: list[dict[str, str]]) -> dict[int, str]:
    """Each step's training loss; a step logged twice (run again after a resume) keeps the
    later row."""
    return {int(row["step"]): row["train/loss"] for row in rows if row.get("train/loss")}


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def kill_after_first_epoch(folder: Path, env: dict[str, str]) -> None:
    """Start a three-epoch run and SIGKILL it (and its process group) once its epoch-0
    checkpoint is on disk: in the middle of epoch 1."""
    process = start(
        "yolor_lightning", *THREE_EPOCHS, f"hydra.run.dir={folder}", cwd=folder.parent, env=env
    )
    last = folder / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not (last.is_file() and load_checkpoint(last)["epoch"] == 0):
        assert process.poll() is None, finish(process).stderr[-3000:]
        assert time.monotonic() < deadline, "no epoch-0 checkpoint within 300 s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    assert finish(process).returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted_and_resumed(tmp_path_factory, environment) -> tuple[Path, Path, list[dict]]:
    """The same run twice: once straight through, once killed in epoch 1 and resumed (with a
    stale temporary checkpoint planted as a killed save would leave it)."""
    root = tmp_path_factory.mktemp("resume")
    uninterrupted, resumed = root / "uninterrupted", root / "resumed"
    train(uninterrupted, env=environment)
    kill_after_first_epoch(resumed, environment)
    before_resume = csv_rows(resumed)
    stale = temporary_sibling(resumed / "checkpoints" / "last.ckpt")
    stale = stale.with_name(stale.name.rpartition("-")[0] + f"-{dead_pid()}")
    stale.write_bytes(b"half a checkpoint")
    train(resumed, "ckpt_path=last", env=environment)
    assert not stale.exists(), "the killed save's temporary file was left behind"
    return uninterrupted, resumed, before_resume


def test_a_run_killed_mid_epoch_resumes_bit_identically(uninterrupted_and_resumed):
    uninterrupted, resumed, _ = uninterrupted_and_resumed
    expected = load_checkpoint(uninterrupted / "checkpoints" / "last.ckpt")
    actual = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert expected["global_step"] == actual["global_step"] == 12
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name
    expected_losses = losses_by_step(csv_rows(uninterrupted))
    assert len(expected_losses) == 12
    assert losses_by_step(csv_rows(resumed)) == expected_losses
    results = [json.loads((f / "results.json").read_text()) for f in (uninterrupted, resumed)]
    assert results[0]["metrics"] == results[1]["metrics"]


def test_a_resumed_run_keeps_every_row_logged_before_the_kill(uninterrupted_and_resumed):
    _, resumed, before_resume = uninterrupted_and_resumed
    assert len([row for row in before_resume if row.get("train/loss")]) >= 4  # all of epoch 0
    after = csv_rows(resumed)
    assert after[: len(before_resume)] == before_resume


def test_two_runs_started_together_get_a_folder_each(tmp_path, environment):
    processes = [
        start(
            "yolor_lightning", *THREE_EPOCHS, "trainer.max_epochs=1", cwd=tmp_path, env=environment
        )
        for _ in range(2)
    ]
    for process in processes:
        result = finish(process)
        assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(path.parent for path in tmp_path.glob("outputs/*/*/results.json"))
    assert len(folders) == 2
    run_ids = {(folder / "wandb" / "run-id").read_text() for folder in folders}
    assert len(run_ids) == 2
    for folder in folders:
        assert len(losses_by_step(csv_rows(folder))) == 4  # one run's steps, not two runs'


def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path, environment):
    folder = tmp_path / "run"
    train(folder, "trainer.max_epochs=1", env=environment)
    results = (folder / "results.json").read_text()
    rows = csv_rows(folder)
    second = train(folder, "trainer.max_epochs=1", env=environment, check=False)
    assert second.returncode != 0
    assert f"run folder {folder} already holds a run" in second.stderr
    assert "ckpt_path=last" in second.stderr
    assert (folder / "results.json").read_text() == results
    assert csv_rows(folder) == rows


def test_a_non_finite_loss_stops_the_run_and_is_recorded_as_failed(tmp_path, environment):
    folder = tmp_path / "run"
    result = train(folder, "task.optimizer.lr=1e6", env=environment, check=False)
    assert result.returncode != 0
    assert "NonFiniteError" in result.stderr and "the training loss is not finite at step" in (
        result.stderr
    )
    results = json.loads(
        (folder / "results.json").read_text(),
        parse_constant=lambda constant: pytest.fail(f"results.json holds a bare {constant}"),
    )
    assert results["status"] == "failed"
    assert "not finite at step" in results["failure"] and "metrics" not in results
    for checkpoint in (folder / "checkpoints").glob("*.ckpt"):
        for name, tensor in load_checkpoint(checkpoint)["state_dict"].items():
            assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), name

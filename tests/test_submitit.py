"""Sweeps through submitit's local executor (hydra-submitit-launcher), the stand-in here for its
SLURM executor: the jobs run side by side in processes of their own; a job that is preempted
(SIGUSR2, the signal submitit asks SLURM for) is requeued by submitit and resumes from its own
last checkpoint, continuing its W&B run; with one process per device submitit starts the ranks
of a DDP job itself, as srun does on a cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_runs import STEPS_PER_EPOCH, TINY, finish, offline_environment, run, start
from wandb_records import offline_runs

MAX_EPOCHS = 2


def process_with_open(path: Path) -> int:
    """The process that holds ``path`` open: a job's own process holds its Hydra log."""
    for link in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if Path(os.readlink(link)) == path.resolve():
                return int(link.parts[2])
    raise AssertionError(f"no process has {path} open")


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            result = finish(process, timeout=1)
            raise AssertionError(f"{path} never appeared:\n{result.stderr[-6000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def preempted_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """Two jobs (seeds 0 and 1); job 0 is preempted once its first epoch is checkpointed."""
    cwd = tmp_path_factory.mktemp("submitit_sweep")
    process = start(
        "yolor_lightning",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.sweep.dir=sweep",
        "seed=0,1",
        f"trainer.max_epochs={MAX_EPOCHS}",
        *TINY,
        cwd=cwd,
        env=offline_environment(tmp_path_factory.getbasetemp() / "cache"),
    )
    job = cwd / "sweep" / "0"
    wait_for(job / "checkpoints" / "last.ckpt", process)
    os.kill(process_with_open(job / "train.log"), signal.SIGUSR2)
    return finish(process).returncode, cwd / "sweep"


@pytest.mark.slow
def test_both_jobs_finish_each_with_its_own_results(preempted_sweep):
    returncode, sweep = preempted_sweep
    assert returncode == 0
    for seed in (0, 1):
        results = json.loads((sweep / str(seed) / "results.json").read_text())
        assert results["choices"]["seed"] == seed
        assert (results["epochs"], results["steps"]) == (
            MAX_EPOCHS,
            MAX_EPOCHS * STEPS_PER_EPOCH[1],
        )


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_from_its_last_checkpoint(preempted_sweep):
    _, sweep = preempted_sweep
    logs = "".join(path.read_text() for path in sweep.glob(".submitit/*/*_log.*"))
    assert "Requeued job" in logs
    restored = "Restoring states from the checkpoint path at {}"
    assert restored.format(sweep / "0" / "checkpoints" / "last.ckpt") in logs
    assert restored.format(sweep / "1" / "checkpoints" / "last.ckpt") not in logs


@pytest.mark.slow
def test_preempted_job_continues_its_wandb_run(preempted_sweep):
    _, sweep = preempted_sweep
    first, resumed = offline_runs(sweep / "0")
    assert first.id == resumed.id
    assert first.summary["trainer/global_step"] < MAX_EPOCHS * STEPS_PER_EPOCH[1]
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert resumed.summary["final/AP"] == pytest.approx(results["metrics"]["AP"])
    (other,) = offline_runs(sweep / "1")
    assert other.id != first.id


@pytest.mark.slow
def test_submitit_starts_the_ranks_of_a_ddp_job(tmp_path: Path):
    """``hydra/launcher=local``: one submitit task per device; Lightning starts no process."""
    run(
        "yolor_lightning",
        "-m",
        "hydra/launcher=local",
        "hydra.sweep.dir=sweep",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        *TINY,
        cwd=tmp_path,
        env=offline_environment(Path(os.environ["YOLOR_LIGHTNING_CACHE"])),
    )
    job = tmp_path / "sweep" / "0"
    results = json.loads((job / "results.json").read_text())
    assert results["steps"] == STEPS_PER_EPOCH[2]
    assert not list(job.glob("train_ddp_process_*.log"))  # no rank started by Lightning
    assert len(offline_runs(job)) == 1

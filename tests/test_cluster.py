"""The SLURM launcher config and what a job started by it gets, checked with the real pieces
short of a cluster: Hydra composes and instantiates the submitit launcher, and Lightning's own
SLURM environment reads the variables SLURM sets in each task of such a job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig

from yolor_lightning.cluster import cluster_environment, resume_from
from yolor_lightning.config import register_schemas


def compose_with_launcher(*overrides: str) -> DictConfig:
    register_schemas()
    with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def slurm_job(*overrides: str) -> tuple[DictConfig, dict]:
    """The config and the launcher parameters (resolved) of ``-m hydra/launcher=slurm ...``."""
    cfg = compose_with_launcher("hydra/launcher=slurm", "trainer=ddp", *overrides)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == SlurmLauncher.__name__  # the plugin's, found by Hydra
    return cfg, launcher.params


def test_slurm_tasks_and_nodes_follow_the_trainer():
    cfg, params = slurm_job("trainer.num_nodes=2", "trainer.devices=4")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert (cfg.trainer.strategy, cfg.trainer.sync_batchnorm) == ("ddp", True)


def test_slurm_resources_are_overridable():
    overrides = {
        "partition": "gpu",
        "account": "yolor",
        "qos": "high",
        "cpus_per_task": 12,
        "mem_gb": 480,
        "timeout_min": 120,
        "max_num_timeout": 5,
    }
    _, params = slurm_job(*(f"hydra.launcher.{key}={value}" for key, value in overrides.items()))
    assert {key: params[key] for key in overrides} == overrides


@pytest.fixture
def slurm_task(monkeypatch: pytest.MonkeyPatch):
    """Set the variables SLURM sets in task 9 (node 1, local rank 1) of a job started by
    submitit with ``hydra/launcher=slurm trainer=ddp trainer.num_nodes=2`` (8 GPUs per node)."""
    _, params = slurm_job("trainer.num_nodes=2")
    nodes, tasks = params["nodes"], params["tasks_per_node"]
    variables = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": params["name"],
        "SLURM_NNODES": nodes,
        "SLURM_NTASKS": nodes * tasks,
        "SLURM_NTASKS_PER_NODE": tasks,
        "SLURM_NODELIST": "gpu[01-02]",
        "SLURM_PROCID": 9,
        "SLURM_LOCALID": 1,
        "SLURM_NODEID": 1,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))
    # Lightning's SLURMEnvironment exports MASTER_ADDR when asked for it: recorded here as unset,
    # it is removed again after the test instead of leaking into later runs.
    monkeypatch.setenv("MASTER_ADDR", "")
    monkeypatch.delenv("MASTER_ADDR")


def test_lightning_accepts_the_slurm_job_and_leaves_requeueing_to_submitit(slurm_task):
    environment = cluster_environment()
    assert isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue is False  # submitit requeues (USR2), not Lightning (USR1)
    environment.validate_settings(num_devices=8, num_nodes=2)
    assert (environment.world_size(), environment.global_rank()) == (16, 9)
    assert (environment.node_rank(), environment.local_rank()) == (1, 1)
    assert environment.main_address == "gpu01"
    with pytest.raises(ValueError, match="devices=4"):
        environment.validate_settings(num_devices=4, num_nodes=2)


def test_submitit_local_tasks_are_read_from_torch_distributed_variables(monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    assert isinstance(cluster_environment(), TorchElasticEnvironment)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    assert cluster_environment() is None  # Lightning chooses (and starts ranks > 0 itself)


def test_a_submitit_job_resumes_from_its_last_checkpoint(tmp_path: Path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.touch()
    assert resume_from(None, last) is None  # outside submitit: only when asked (ckpt_path)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert resume_from(None, last) == str(last)
    assert resume_from("/elsewhere/epoch=3.ckpt", last) == "/elsewhere/epoch=3.ckpt"
    last.unlink()
    assert resume_from(None, last) is None  # the job's first start


def test_the_slurm_task_variables_do_not_outlive_their_test():
    assert not {"MASTER_ADDR", "SLURM_NTASKS", "SUBMITIT_EXECUTOR"} & set(os.environ)

"""How a run meets the process launchers: Lightning's DDP launcher, Hydra multiruns, submitit.

- **Lightning's subprocess launcher** (``trainer.strategy=ddp`` without a cluster) starts ranks
  > 0 by re-running this process's command line with ``hydra.run.dir`` set to the run folder
  (``lightning.fabric.strategies.launchers.subprocess_script``). In a multirun that command line
  is the whole sweep: :func:`distributed_job` points it at this job alone (its overrides, its
  folder), so the extra ranks join this job instead of starting a second sweep in a second
  folder; and it restores what the launcher changed in this process (``sys.argv``, the DDP
  environment variables, the process group), so the next job of the sweep starts its own ranks.
- **submitit** (``hydra/launcher=slurm`` or ``local``) has started every process of a job
  already, one per device (``tasks_per_node`` = ``trainer.devices``): Lightning must use them and
  start none. On SLURM it reads them from SLURM's variables (``SLURMEnvironment``); with the local
  executor submitit's own variables are exported in torch.distributed's form (``RANK``,
  ``WORLD_SIZE``, ...) and read by ``TorchElasticEnvironment``.
- **Requeue**: submitit requeues a job that times out or is preempted, into the same run folder,
  so Lightning's own SLURM requeue is turned off (one handler of the signal, not two), and a
  submitit job resumes from its folder's last checkpoint when there is one (:func:`resume_from`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from omegaconf import read_write

# What Lightning's launcher and submitit's export set in this process for one distributed world.
DDP_VARIABLES = (
    "LOCAL_RANK",
    "NODE_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def submitit_executor() -> str | None:
    """``slurm`` or ``local`` inside a job started by submitit, else ``None``."""
    return os.environ.get("SUBMITIT_EXECUTOR") or None


def cluster_environment() -> ClusterEnvironment | None:
    """The Lightning cluster environment of a submitit job (``None``: Lightning's own choice)."""
    executor = submitit_executor()
    if executor == "slurm":
        return SLURMEnvironment(auto_requeue=False)
    if executor == "local":
        return TorchElasticEnvironment()
    return None


def resume_from(ckpt_path: str | None, last_checkpoint: Path) -> str | None:
    """``ckpt_path``; unset, in a submitit job, ``last_checkpoint`` when it exists.

    A submitit job that comes back after a timeout or a preemption runs again in its own run
    folder, which then holds the checkpoint of its latest epoch.
    """
    if ckpt_path is None and submitit_executor() and last_checkpoint.is_file():
        return str(last_checkpoint)
    return ckpt_path


@contextmanager
def distributed_job() -> Iterator[None]:
    """Run one Hydra job as one distributed world (see the module docstring)."""
    argv = list(sys.argv)
    variables = {name: os.environ.get(name) for name in DDP_VARIABLES}
    if submitit_executor() == "local":
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    elif "LOCAL_RANK" not in os.environ and _in_multirun():
        _relaunch_this_job_only()
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        sys.argv[:] = argv
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _relaunch_this_job_only() -> None:
    """Make the command Lightning re-runs for ranks > 0 this job's own single run.

    Lightning appends ``hydra.run.dir=<hydra.run.dir>`` to ``sys.argv``; in a multirun job the
    configured ``hydra.run.dir`` is not the job's folder, so it is set to it.
    """
    hydra = HydraConfig.get()
    sys.argv[1:] = list(hydra.overrides.task)
    with read_write(hydra.run):
        hydra.run.dir = hydra.runtime.output_dir

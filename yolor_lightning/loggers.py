"""Experiment loggers: W&B (offline unless the user opts in) and CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig


def wandb_mode(configured: str | None) -> str:
    """``logger.wandb.mode`` if set, else ``WANDB_MODE``, else online only with an API key.

    Offline is the default so that a run never waits on a network it cannot reach.
    """
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def build_loggers(
    settings: DictConfig,
    output_dir: Path,
    run_name: str,
    group: str,
    config: dict[str, Any],
) -> list[Logger]:
    loggers: list[Logger] = []
    if settings.csv:
        loggers.append(CSVLogger(save_dir=output_dir, name="csv", version=""))
    if settings.wandb is not None:
        wandb = settings.wandb
        loggers.append(
            WandbLogger(
                project=wandb.project,
                entity=wandb.entity,
                name=run_name,
                group=group,
                tags=list(wandb.tags),
                job_type="train",
                save_dir=str(output_dir),
                mode=wandb_mode(wandb.mode),
                config=config,
            )
        )
    return loggers

"""``python -m yolor_lightning.evaluate ckpt_path=PATH [overrides]``: evaluate a checkpoint.

The network is built from the composed training config (give the overrides of the run that wrote
the checkpoint) and the checkpoint's weights are loaded into it (this project's checkpoints hold
the EMA weights). It is validated on the whole validation split, in one process or, with
``trainer=ddp_cpu`` or ``trainer=ddp``, in several: each rank evaluates its own share of the
images, every image exactly once, and the metrics are computed over all of them. Writes
``evaluation.json`` into its own run folder (``evaluations/<date>/<time>/``), beside it the
per-image matches of the detection task (``per_image_eval.npz``, for the report's bootstrap over
images), and a W&B run with ``job_type=eval``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from yolor_lightning.atomic import atomic_path
from yolor_lightning.cluster import distributed_job
from yolor_lightning.config import check_values
from yolor_lightning.loggers import finish_wandb, no_wandb_run_left_open
from yolor_lightning.tasks.per_image import PER_IMAGE_FILE
from yolor_lightning.train import (
    build_datamodule,
    build_module,
    build_trainer,
    run_loggers,
    run_overrides,
)

EVALUATION_FILE = "evaluation.json"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Validate ``cfg.ckpt_path``; return (and write) the contents of evaluation.json."""
    if cfg.ckpt_path is None:
        raise ValueError(
            "config key ckpt_path is required: the checkpoint to evaluate, "
            "e.g. ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt"
        )
    checkpoint = Path(cfg.ckpt_path)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"config key ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    check_values(cfg)
    output_dir = Path(cfg.output_dir)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    loggers = run_loggers(cfg, output_dir, job_type="eval")
    trainer = build_trainer(cfg, output_dir, loggers, callbacks=[])
    (metrics,) = trainer.validate(
        module, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False
    )
    evaluation = {
        "experiment": cfg.experiment_name,
        "overrides": run_overrides(),
        "checkpoint": str(checkpoint.resolve()),
        "processes": trainer.world_size,
        "metrics": {key.removeprefix("val/"): float(value) for key, value in metrics.items()},
    }
    if trainer.is_global_zero:
        if "det" in module.tasks:
            module.evaluator.per_image_results().save(output_dir / PER_IMAGE_FILE)
        with atomic_path(output_dir / EVALUATION_FILE) as temporary:
            temporary.write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n")
        finish_wandb(loggers, {f"final/{k}": v for k, v in evaluation["metrics"].items()})
    return evaluation


@hydra.main(version_base="1.3", config_path="pkg://yolor_lightning.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with distributed_job(), no_wandb_run_left_open():
        evaluate(cfg)


if __name__ == "__main__":
    main()

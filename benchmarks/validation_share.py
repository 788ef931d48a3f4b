"""Validation's share of the default run's time, measured per epoch from epoch 0 on.

    python benchmarks/validation_share.py [--epochs N] [--run-dir DIR] [overrides ...]

Fits the default run (``python -m yolor_lightning`` plus the overrides, its schedule, its
training and evaluation threads and its heap setting unchanged) for its first ``--epochs``
epochs and times, per epoch, the training batches and the validation (network, loss, NMS and the
COCO evaluation), and checks that every logged validation metric is finite. ``validation_share``
is the validation's time over the training batches' time, ``share_of_epoch`` over the whole
epoch's (training batches and validation). Writes benchmarks/results/validation_share.json (or
``--output``) after every epoch (a run stopped early keeps the epochs it measured); the run
folder (checkpoints, CSV log) is kept in ``--run-dir`` when given.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from records import add_output_option, invocation, write_record

from yolor_lightning.config import compose_config
from yolor_lightning.environment import cpu_model
from yolor_lightning.train import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    process_settings,
    trainer_arguments,
)


class EpochTimer(Callback):
    """Seconds of each epoch's training batches and of its validation, written to ``output``
    after every validation; stops after ``epochs``."""

    def __init__(self, epochs: int, record: dict[str, Any], output: Path) -> None:
        self.epochs = epochs
        self.record = record
        self.output = output
        self.records: list[dict[str, Any]] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_seconds = time.perf_counter() - self._started
            self._started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        validation = time.perf_counter() - self._started
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.records.append(
            {
                "epoch": trainer.current_epoch,
                "train_seconds": round(self._train_seconds, 1),
                "validation_seconds": round(validation, 1),
                "validation_share": round(validation / self._train_seconds, 3),
                "share_of_epoch": round(validation / (validation + self._train_seconds), 3),
                "non_finite_metrics": sorted(k for k, v in metrics.items() if not math.isfinite(v)),
                "val/loss": metrics["val/loss"],
                "val/AP": metrics["val/AP"],
            }
        )
        write_record(self.output, {**self.record, "epochs": self.records}, show=False)
        if len(self.records) >= self.epochs:
            trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "validation_share.json")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        output_dir = arguments.run_dir or Path(scratch)
        cfg = compose_config(
            ["callbacks.progress_bar=null", f"output_dir={output_dir}", *arguments.overrides]
        )
        with process_settings(cfg) as evaluation_threads:
            L.seed_everything(cfg.seed, workers=True)
            datamodule = build_datamodule(cfg)
            module = build_module(cfg, datamodule)
            callbacks, _ = build_callbacks(cfg.callbacks, output_dir, evaluation_threads)
            record = {
                "command": invocation(),
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "precision": trainer_arguments(cfg.trainer)["precision"],
            }
            record["training_threads"] = torch.get_num_threads()
            record["evaluation_threads"] = evaluation_threads or torch.get_num_threads()
            timer = EpochTimer(arguments.epochs, record, arguments.output)
            trainer = build_trainer(cfg, output_dir, [CSVLogger(output_dir)], [*callbacks, timer])
            trainer.fit(module, datamodule=datamodule)
    print(arguments.output.read_text())


if __name__ == "__main__":
    main()

"""The metrics of the evaluated checkpoint after fit (the best, or with
``callbacks.checkpoint.evaluate=last`` the last): the last validation's when it is the last
step's weights, one more validation pass otherwise (real tiny runs)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from cli_runs import STEPS_PER_EPOCH, TINY
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from yolor_lightning.checkpoints import load_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.train import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    checkpoint_metrics,
    evaluated_checkpoint,
)

NUM_VAL = 16  # cli_runs.TINY's validation split


class ValidationPasses(Callback):
    """The ``val/`` metrics of every validation pass after the sanity check, in order, and the
    images tensor of each pass's first batch."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.first_images: list[torch.Tensor] = []

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self.first_images.append(batch["images"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.metrics.append(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            )


def fit_and_evaluate(
    output_dir: Path, *overrides: str
) -> tuple[dict, ValidationPasses, str, L.LightningModule]:
    """Fit the tiny run as ``train`` does, then take the evaluated checkpoint's metrics."""
    cfg = compose_config([*TINY, f"output_dir={output_dir}", *overrides])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    callbacks, checkpoint = build_callbacks(cfg.callbacks, output_dir)
    passes = ValidationPasses()
    trainer = build_trainer(cfg, output_dir, [CSVLogger(output_dir)], [*callbacks, passes])
    trainer.fit(module, datamodule=datamodule)
    evaluated = evaluated_checkpoint(cfg.callbacks, checkpoint, output_dir)
    return checkpoint_metrics(trainer, module, datamodule, evaluated), passes, evaluated, module


@pytest.mark.slow
def test_best_checkpoint_of_the_last_step_reuses_the_last_validation(tmp_path: Path) -> None:
    final, passes, best, module = fit_and_evaluate(tmp_path, "trainer.max_epochs=1")
    assert load_checkpoint(best)["global_step"] == STEPS_PER_EPOCH[1]
    assert len(passes.metrics) == 1  # the epoch's validation only, no final pass
    assert final == passes.metrics[0]
    assert {"val/loss", "val/AP", "val/AR100"} <= final.keys()
    assert module.evaluator.per_image_results().num_images == NUM_VAL


@pytest.mark.slow
def test_weights_moved_after_the_best_checkpoint_are_validated_once_more(tmp_path: Path) -> None:
    """Stopped one step into the second epoch: the best checkpoint (step 4, the only validation)
    is no longer the module's weights, so it is validated again, with the same metrics, on the
    first validation's batches replayed from memory (``data.val_cache_mb``)."""
    steps = STEPS_PER_EPOCH[1] + 1
    final, passes, best, _ = fit_and_evaluate(
        tmp_path, "trainer.max_epochs=2", f"+trainer.max_steps={steps}"
    )
    assert load_checkpoint(best)["global_step"] == STEPS_PER_EPOCH[1]
    assert len(passes.metrics) == 2  # epoch 0's validation, then the final pass
    assert final == passes.metrics[1] == passes.metrics[0]
    assert passes.first_images[1] is passes.first_images[0]


@pytest.mark.slow
def test_evaluate_last_reports_the_final_weights_not_the_best_epoch(tmp_path: Path) -> None:
    final, passes, evaluated, _ = fit_and_evaluate(
        tmp_path, "trainer.max_epochs=2", "callbacks.checkpoint.evaluate=last"
    )
    assert Path(evaluated).name == "last.ckpt"
    assert load_checkpoint(evaluated)["global_step"] == 2 * STEPS_PER_EPOCH[1]
    assert len(passes.metrics) == 2  # the two epochs' validations, no final pass
    assert final == passes.metrics[1]


def test_an_unknown_evaluated_checkpoint_is_refused_naming_the_key(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "callbacks.checkpoint.evaluate=worst"])
    with pytest.raises(
        ValueError, match=r"callbacks\.checkpoint\.evaluate='worst'.*'best', 'last'"
    ):
        build_callbacks(cfg.callbacks, tmp_path)

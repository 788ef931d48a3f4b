"""The coco recipe's schedule against the official YOLOR train loop: learning rates, momentum and
optimizer steps batch by batch, and gradient accumulation to the nominal batch in a real run."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from yolor_lightning.callbacks import RampedEMA
from yolor_lightning.config import compose_config
from yolor_lightning.tasks.accumulation import NominalBatchAccumulation
from yolor_lightning.tasks.schedule import WarmupCosineSchedule
from yolor_lightning.train import build_datamodule, build_module

# data/hyp.scratch.*.yaml of WongKinYiu/yolor
OFFICIAL_HYP = {
    "lr0": 0.01,
    "lrf": 0.2,
    "momentum": 0.937,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
}


def official_train_loop(epochs: int, batches: int, total_batch: int) -> list[tuple]:
    """(lr of the three groups, momentum, optimizer steps) per batch, as the official train.py
    sets them: warm-up by np.interp over max(3 epochs, 1000) batches with the accumulation
    interval rising from 1 to 64 / batch, LambdaLR cosine stepped once per epoch."""
    hyp, nominal = OFFICIAL_HYP, 64

    def lf(epoch: int) -> float:
        return ((1 + math.cos(epoch * math.pi / epochs)) / 2) * (1 - hyp["lrf"]) + hyp["lrf"]

    warmup = max(round(hyp["warmup_epochs"] * batches), 1000)
    accumulate = max(round(nominal / total_batch), 1)
    lrs, momentum = [hyp["lr0"] * lf(0)] * 3, hyp["momentum"]
    rows = []
    for epoch in range(epochs):
        for i in range(batches):
            ni = i + batches * epoch
            if ni <= warmup:
                ramp = [0, warmup]
                accumulate = max(1, np.interp(ni, ramp, [1, nominal / total_batch]).round())
                lrs = [
                    np.interp(
                        ni, ramp, [hyp["warmup_bias_lr"] if j == 2 else 0.0, hyp["lr0"] * lf(epoch)]
                    )
                    for j in range(3)
                ]
                momentum = np.interp(ni, ramp, [hyp["warmup_momentum"], hyp["momentum"]])
            rows.append((tuple(lrs), momentum, ni % accumulate == 0))
        lrs = [hyp["lr0"] * lf(epoch + 1)] * 3  # scheduler.step() at the epoch's end
    return rows


def project_train_loop(epochs: int, batches: int, total_batch: int) -> list[tuple]:
    """The same quantities from this project's schedule and accumulation, configured by the coco
    recipe exactly as ``UnifiedModule.configure_optimizers`` configures them."""
    task = compose_config(["recipe=coco"]).task
    optimizer_settings, schedule_settings = task.optimizer, task.schedule
    assert optimizer_settings.accumulate_to_nominal and schedule_settings.cosine_per_epoch
    groups = [{"params": [nn.Parameter(torch.zeros(1))]} for _ in range(3)]
    groups[2]["is_bias"] = True  # the official third group: the biases
    optimizer = torch.optim.SGD(
        groups, lr=optimizer_settings.lr, momentum=optimizer_settings.momentum, nesterov=True
    )
    warmup = max(
        round(schedule_settings.warmup_epochs * batches), schedule_settings.min_warmup_steps
    )
    schedule = WarmupCosineSchedule(
        optimizer,
        total_steps=epochs * batches,
        warmup_steps=warmup,
        decay_interval=batches,
        final_lr_fraction=schedule_settings.final_lr_fraction,
        warmup_bias_lr=schedule_settings.warmup_bias_lr,
        warmup_momentum=schedule_settings.warmup_momentum,
    )
    accumulation = NominalBatchAccumulation(
        optimizer_settings.nominal_batch_size, total_batch, warmup
    )
    rows = []
    for ni in range(epochs * batches):
        lrs = tuple(group["lr"] for group in optimizer.param_groups)
        rows.append((lrs, optimizer.param_groups[0]["momentum"], accumulation.steps_after(ni)))
        optimizer.step()
        schedule.step()
    return rows


@pytest.mark.parametrize(
    ("batches", "total_batch"),
    [(300, 16), (180, 24), (500, 64), (90, 8)],
    ids=["warmup-1000-of-900", "interval-3", "no-accumulation", "warmup-longer-than-an-epoch"],
)
def test_coco_recipe_follows_the_official_train_loop_batch_by_batch(batches, total_batch):
    epochs = 4
    official = official_train_loop(epochs, batches, total_batch)
    ours = project_train_loop(epochs, batches, total_batch)
    assert [row[2] for row in ours] == [row[2] for row in official]
    for ni, ((our_lrs, our_momentum, _), (lrs, momentum, _)) in enumerate(
        zip(ours, official, strict=True)
    ):
        assert our_lrs == pytest.approx(lrs, rel=1e-12, abs=1e-15), ni
        assert our_momentum == pytest.approx(momentum, rel=1e-12), ni


def test_accumulation_interval_rises_from_one_to_the_nominal_ratio():
    accumulation = NominalBatchAccumulation(64, 16, warmup_steps=1000)
    assert accumulation.interval(0) == 1
    assert accumulation.interval(1000) == accumulation.interval(5000) == 4
    assert NominalBatchAccumulation(64, 128, 1000).final_interval == 1  # never below 1
    steps = [ni for ni in range(1000, 1013) if accumulation.steps_after(ni)]
    assert steps == [1000, 1004, 1008, 1012]


class OptimizerSteps(L.Callback):
    """Counts the optimizer's real steps (a torch step hook), whatever global_step says."""

    def __init__(self) -> None:
        self.count = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.optimizers[0].register_step_post_hook(lambda *_: self._count())

    def _count(self) -> None:
        self.count += 1


@pytest.mark.slow
def test_a_real_run_steps_the_optimizer_and_the_ema_at_interval_ends_only(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(
        [
            "data.shapes.num_train=64",
            "data.shapes.num_val=8",
            "data.shapes.image_size=64",
            "data.image_size=64",
            "data.batch_size=16",
            "data.num_workers=0",
            "task.optimizer.accumulate_to_nominal=true",
            "task.schedule.warmup_epochs=0",
        ]
    )
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    steps, ema = OptimizerSteps(), RampedEMA(decay=0.9, ramp_steps=1)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[steps, ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    # 8 batches of 16 images, interval 64 / 16 = 4 from the start: steps after batches 0 and 4
    assert trainer.global_step == 8
    assert steps.count == 2
    assert int(ema._average_model.n_averaged) == 2


def test_gradients_of_an_open_interval_are_checkpointed_and_restored():
    cfg = compose_config(["task.optimizer.accumulate_to_nominal=true"])
    module = build_module(cfg)
    for index, parameter in enumerate(module.parameters()):
        parameter.grad = torch.full_like(parameter, float(index))
    module.optimizer_stepped = False
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    resumed = build_module(cfg)
    resumed.on_load_checkpoint(checkpoint)
    assert not resumed.optimizer_stepped
    for (name, saved), restored in zip(
        module.named_parameters(), resumed.parameters(), strict=True
    ):
        torch.testing.assert_close(restored.grad, saved.grad, rtol=0, atol=0, msg=name)

"""The default run's training step outside Lightning, and interleaved timing of variants of it.

Shared by the step benchmarks. The machine these ran on was shared with other jobs, so every
figure they keep is a ratio of variants timed in turns (A, B, A, B, ...) within one process,
summarised by medians.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import OmegaConf

from yolor_lightning.config import compose_config
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import build_datamodule, build_module, trainer_arguments


def default_module(overrides: list[str]) -> tuple[Any, UnifiedModule, torch.optim.Optimizer]:
    """The config, module (in training mode) and configured optimiser of the default run."""
    cfg = compose_config(overrides)
    module = build_module(cfg)
    module.trainer = SimpleNamespace(estimated_stepping_batches=1000, max_epochs=6, world_size=1)
    optimizer = module.configure_optimizers()["optimizer"]
    module.trainer = None
    return cfg, module.train(), optimizer


def training_batches(cfg: Any, num_workers: int) -> Iterator[dict[str, Any]]:
    """The default run's training batches, read by ``num_workers`` DataLoader workers."""
    datamodule = build_datamodule(OmegaConf.merge(cfg, {"data": {"num_workers": num_workers}}))
    datamodule.prepare_data()
    datamodule.setup("fit")
    for batch in datamodule.train_dataloader():
        yield datamodule.on_after_batch_transfer(batch, 0)


def autocast(precision: str, device: str = "cpu") -> AbstractContextManager:
    """What Lightning's ``precision`` plugin (32-true or bf16-mixed) wraps the step in."""
    if precision == "bf16-mixed":
        return torch.autocast(device, dtype=torch.bfloat16)
    return nullcontext()


def precision_of(cfg: Any) -> str:
    """The precision the run would train in (``trainer.precision: auto`` resolved)."""
    return trainer_arguments(cfg.trainer)["precision"]


def train_step(
    module: UnifiedModule, optimizer: torch.optim.Optimizer, batch: dict, precision: str
) -> None:
    """Forward, loss, backward and the optimiser step, as Lightning runs them."""
    optimizer.zero_grad()
    with autocast(precision, batch["images"].device.type):
        loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict[str, Any]]:
    """Run each variant (returning its seconds) once per round, in turns; per variant its
    times and their median, and the median's ratio to the first variant's."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            times[name].append(measure())
    reference = statistics.median(next(iter(times.values())))
    return {
        name: {
            "seconds": [round(t, 3) for t in values],
            "median_seconds": round(statistics.median(values), 3),
            "time_ratio": round(statistics.median(values) / reference, 3),
        }
        for name, values in times.items()
    }


def timed_in_turns(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, Any]:
    """``interleaved`` timings under ``variants``, with the machine's 1-minute load average before
    and after them: whether the absolute times or only the ratios can be read."""
    before = os.getloadavg()[0]
    timings = interleaved(variants, rounds)
    return {
        "load_average_1min": {"before": round(before, 2), "after": round(os.getloadavg()[0], 2)},
        "note": "ratios of variants measured in turns within one process; on a loaded machine "
        "compare the ratios, not the absolute times",
        "variants": timings,
    }


def timed(function: Callable[[], None]) -> float:
    """Seconds ``function`` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started

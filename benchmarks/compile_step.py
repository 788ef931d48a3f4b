"""``trainer.compile=true`` on the default run: compile time against the per-step speed-up.

    python benchmarks/compile_step.py [--steps 3] [--rounds 3] [overrides ...]

Times the first steps of the compiled network (training graph: forward, loss, backward; then
the evaluation graph of validation), then the default run's training step eager and compiled in
turns on one real batch, in the run's precision and threads. Writes
benchmarks/results/compile_step.json (or ``--output``) with the steps the compiled run needs to
repay its compile time, next to the default run's steps.
"""

from __future__ import annotations

import argparse
import math
import warnings
from typing import Any

import torch
from records import add_output_option, invocation, write_record
from step_timing import (
    autocast,
    default_module,
    interleaved,
    precision_of,
    timed,
    train_step,
    training_batches,
)

from yolor_lightning.config import plain
from yolor_lightning.environment import compute_threads, usable_cores


def run_steps(cfg: Any) -> int:
    """The optimiser steps of the configured run on the shapes dataset."""
    return math.ceil(cfg.data.shapes.num_train / cfg.data.batch_size) * cfg.trainer.max_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "compile_step.json")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore", message="You are trying to `self.log")
    cfg, eager, eager_optimizer = default_module(arguments.overrides)
    _, compiled, compiled_optimizer = default_module(arguments.overrides)
    threads = compute_threads(plain(cfg.trainer), cfg.data.num_workers) or usable_cores()
    torch.set_num_threads(threads)
    precision = precision_of(cfg)
    batch = next(training_batches(cfg, num_workers=0))

    compiled.network.compile(backend="inductor")
    first_steps = timed(lambda: train_step(compiled, compiled_optimizer, batch, precision))
    eager_step = timed(lambda: train_step(eager, eager_optimizer, batch, precision))
    with torch.no_grad(), autocast(precision):
        compiled.eval()
        first_validation = timed(lambda: compiled(batch["images"]))
        compiled.train()

    def steps(module, optimizer) -> float:
        def run() -> None:
            for _ in range(arguments.steps):
                train_step(module, optimizer, batch, precision)

        return timed(run) / arguments.steps

    timings = interleaved(
        {
            "eager": lambda: steps(eager, eager_optimizer),
            "compiled": lambda: steps(compiled, compiled_optimizer),
        },
        arguments.rounds,
    )
    eager_seconds = timings["eager"]["median_seconds"]
    saved_per_step = eager_seconds - timings["compiled"]["median_seconds"]
    compile_seconds = first_steps + first_validation - eager_step
    record = {
        "command": invocation(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "precision": precision,
        "batch_size": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "note": "machine shared with other jobs (load average ~9 on 2 cores): compare the "
        "ratios, measured in turns within one process; compile seconds are wall time under "
        "that load",
        "compile_seconds_training_graph": round(first_steps - eager_step, 1),
        "compile_seconds_validation_graph": round(first_validation, 1),
        "per_step": timings,
        "steps_to_repay_compile": (
            round(compile_seconds / saved_per_step) if saved_per_step > 0 else None
        ),
        "default_run_steps": run_steps(cfg),
    }
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

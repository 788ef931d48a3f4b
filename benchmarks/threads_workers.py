"""Training throughput of the default run by torch thread count, DataLoader worker count and
precision, against the run as it was before the speed work.

    python benchmarks/threads_workers.py [--steps 4] [--rounds 3] [overrides ...]

Times the default run's training steps (real shapes batches, loss, foreach SGD) fed by fresh
DataLoader workers, in turns: first as the run trained before the speed work (32-bit, torch's
default threads: one per core), then torch's default threads in the run's precision, then
``trainer.threads=auto`` (cores less workers) with the config's workers and with one. Records
each variant's images/s and its throughput relative to the first, and the load average the
machine had meanwhile. Writes benchmarks/results/threads_workers.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from records import add_output_option, invocation, write_record
from step_timing import (
    default_module,
    precision_of,
    timed,
    timed_in_turns,
    train_step,
    training_batches,
)

from yolor_lightning.environment import compute_threads, cpu_model, usable_cores

WARM_UP_STEPS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "threads_workers.json")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore", message="You are trying to `self.log")
    cfg, module, optimizer = default_module(arguments.overrides)
    precision = precision_of(cfg)
    workers = cfg.data.num_workers
    auto = compute_threads({"threads": "auto"}, workers)
    cores = usable_cores()
    settings = {
        f"before the speed work: 32-true, {cores} threads, {workers} workers": (
            cores,
            workers,
            "32-true",
        ),
        f"{precision}, {cores} threads, {workers} workers (torch's default)": (
            cores,
            workers,
            precision,
        ),
        f"{precision}, {auto} thread(s), {workers} workers (threads=auto)": (
            auto,
            workers,
            precision,
        ),
        f"{precision}, 1 thread, 1 worker (threads=auto)": (1, 1, precision),
    }

    def measure(threads: int, num_workers: int, precision: str) -> float:
        torch.set_num_threads(threads)
        batches = training_batches(cfg, num_workers)
        for _ in range(WARM_UP_STEPS):
            train_step(module, optimizer, next(batches), precision)

        def steps() -> None:
            for _ in range(arguments.steps):
                train_step(module, optimizer, next(batches), precision)

        seconds = timed(steps)
        batches.close()
        return seconds

    variants = {name: (lambda s=setting: measure(*s)) for name, setting in settings.items()}
    turns = timed_in_turns(variants, arguments.rounds)
    images = arguments.steps * cfg.data.batch_size
    for timing in turns["variants"].values():
        timing["images_per_second"] = round(images / timing["median_seconds"], 2)
        timing["throughput_ratio"] = round(1 / timing["time_ratio"], 2)
    record = {
        "command": invocation(),
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "precision": precision,
        "batch_size": cfg.data.batch_size,
        "timed_steps_per_round": arguments.steps,
        **turns,
    }
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

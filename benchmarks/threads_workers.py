"""Training throughput of the default run by torch thread count and DataLoader worker count.

    python benchmarks/threads_workers.py [--steps 4] [--rounds 3] [overrides ...]

Times the default run's training steps (real shapes batches, loss, fused SGD, the run's
precision) fed by fresh DataLoader workers, for torch's default threads (one per core) and for
``trainer.threads=auto`` (cores less workers), in turns. Writes
benchmarks/results/threads_workers.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from step_timing import (
    default_module,
    interleaved,
    precision_of,
    timed,
    train_step,
    training_batches,
)

from yolor_lightning.environment import compute_threads, usable_cores

RESULTS = Path(__file__).parent / "results" / "threads_workers.json"
WARM_UP_STEPS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore", message="You are trying to `self.log")
    cfg, module, optimizer = default_module(arguments.overrides)
    precision = precision_of(cfg)
    workers = cfg.data.num_workers
    auto = compute_threads({"threads": "auto"}, workers)
    settings = {
        f"{usable_cores()} threads, {workers} workers (torch's default)": (usable_cores(), workers),
        f"{auto} thread(s), {workers} workers (threads=auto)": (auto, workers),
        "1 thread, 1 worker (threads=auto)": (1, 1),
    }

    def measure(threads: int, num_workers: int) -> float:
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
    timings = interleaved(variants, arguments.rounds)
    record = {
        "command": "python benchmarks/threads_workers.py " + " ".join(sys.argv[1:]),
        "usable_cores": usable_cores(),
        "precision": precision,
        "batch_size": cfg.data.batch_size,
        "timed_steps_per_round": arguments.steps,
        "note": "machine shared with other jobs (load average ~9 on 2 cores): compare the "
        "ratios, measured in turns within one process, not the absolute times",
        "variants": timings,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

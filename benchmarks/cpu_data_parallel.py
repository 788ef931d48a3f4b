"""Training throughput of the default run in one process against two data-parallel processes on
the CPU, each variant a whole `python -m yolor_lightning` run timed in turns.

    python benchmarks/cpu_data_parallel.py [--rounds 2] [--variants KEY ...] [--output FILE]
        [overrides ...]

On 2 cores the default network's bfloat16 step gains little from a second torch thread, so the
second core can instead run a second DDP process (gloo) with half the batch: the same global
batch, steps, learning rate and schedule, BatchNorm statistics over half as many images. The
variants, all with the overrides given (default: one epoch of the default run):

- before the speed work: 32-true, torch's default threads (one per core), glibc's malloc
  thresholds as they come (``trainer.keep_freed_memory=false``), one process;
- today's default: ``trainer.precision: auto``, ``trainer.threads: auto``,
  ``trainer.keep_freed_memory: true``, one process;
- the same with ``trainer.keep_freed_memory=false``;
- the same with torch's default threads (one per core, ``trainer.threads=null``): the cores the
  default leaves to the loader's workers, given to torch too;
- ``trainer=ddp_cpu``, ``data.batch_size`` halved: one thread per process (``threads: auto``).

Records each variant's fit seconds (validation and process start included), the images it
trained per second and its throughput relative to the first, and the final AP of each run (one
seed: a smoke check, not the paired-seed AP comparison). Writes
benchmarks/results/cpu_data_parallel.json unless ``--output`` names another file (to keep another
machine's record beside it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from records import add_output_option, invocation, write_record
from step_timing import timed_in_turns

from yolor_lightning.config import compose_config
from yolor_lightning.environment import cpu_model, usable_cores
from yolor_lightning.results import RESULTS_FILE, read_results
from yolor_lightning.train import build_datamodule

DEFAULT_BUDGET = ["trainer.max_epochs=1"]


def variants_of(batch_size: int) -> dict[str, tuple[str, list[str]]]:
    """Each variant's name in the record and overrides, by its ``--variants`` key, for a default
    run of global batch ``batch_size``."""
    if batch_size % 2:
        raise ValueError(f"data.batch_size={batch_size} cannot be split over 2 processes")
    return {
        "before": (
            "before the speed work: 32-true, torch's threads, 1 process",
            [
                "trainer.precision=32-true",
                "trainer.threads=null",
                "trainer.keep_freed_memory=false",
            ],
        ),
        "default": (
            "today's default: 1 process (precision auto, threads auto, keep_freed_memory)",
            [],
        ),
        "heap_off": (
            "the same with trainer.keep_freed_memory=false",
            ["trainer.keep_freed_memory=false"],
        ),
        "torch_threads": (
            "precision auto, torch's threads (one per core), 1 process",
            ["trainer.threads=null"],
        ),
        "ddp_cpu": (
            f"trainer=ddp_cpu: 2 processes of {batch_size // 2} images, 1 thread each",
            ["trainer=ddp_cpu", f"data.batch_size={batch_size // 2}"],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(variants_of(2)),
        help="the variants to run, by key (default: all)",
    )
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "cpu_data_parallel.json")
    arguments = parser.parse_intermixed_args()
    overrides = arguments.overrides or DEFAULT_BUDGET
    cfg = compose_config(overrides)
    build_datamodule(cfg).prepare_data()  # the dataset is generated once, outside the timings
    batch_size = cfg.data.batch_size
    runs: dict[str, list[dict]] = {}

    with tempfile.TemporaryDirectory() as scratch:

        def run(name: str, variant: list[str]) -> float:
            run_dir = Path(scratch) / f"run{sum(map(len, runs.values()))}"
            command = [sys.executable, "-m", "yolor_lightning", f"hydra.run.dir={run_dir}"]
            subprocess.run([*command, *overrides, *variant], check=True)
            results = read_results(run_dir / RESULTS_FILE)
            runs.setdefault(name, []).append(results)
            return results["fit_seconds"]

        chosen = arguments.variants or list(variants_of(batch_size))
        variants = {
            name: (lambda n=name, v=variant: run(n, v))
            for key, (name, variant) in variants_of(batch_size).items()
            if key in chosen
        }
        turns = timed_in_turns(variants, arguments.rounds)

    steps_taken = {results["steps"] for variant_runs in runs.values() for results in variant_runs}
    if len(steps_taken) != 1:
        raise RuntimeError(f"the variants took different numbers of steps: {steps_taken}")
    (steps,) = steps_taken
    for name, timing in turns["variants"].items():
        timing["fit_seconds"] = timing.pop("seconds")
        timing["median_fit_seconds"] = timing.pop("median_seconds")
        timing["images_per_second"] = round(steps * batch_size / timing["median_fit_seconds"], 2)
        timing["throughput_ratio"] = round(1 / timing["time_ratio"], 2)
        timing["steps"] = steps
        timing["precision"] = runs[name][0]["precision"]
        timing["torch_threads"] = runs[name][0]["environment"]["torch_threads"]
        timing["AP"] = [round(results["metrics"]["AP"], 4) for results in runs[name]]
    record = {
        "command": invocation(),
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "global_batch_size": batch_size,
        "overrides": overrides,
        **turns,
    }
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

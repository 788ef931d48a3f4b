"""The default run's training steps with glibc's malloc thresholds as they come and with
``trainer.keep_freed_memory`` (``yolor_lightning/heap.py``), each variant a fresh process, in
turns.

    python benchmarks/heap_reuse.py [--steps 20] [--rounds 4] [overrides ...]

A malloc setting lasts for the process, so every measurement is a child process of this script:
it builds the default module and its training loader (the run's workers and threads), takes two
warm-up steps, then times ``--steps`` steps and counts the page faults of the main process over
them (``getrusage``: minor faults, the kernel handing out fresh zeroed pages). Records per
variant the seconds, images/s, page faults per step, and the time ratio against the
thresholds as they come. Writes benchmarks/results/heap_reuse.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import warnings

from records import add_output_option, invocation, write_record
from step_timing import (
    default_module,
    precision_of,
    timed,
    timed_in_turns,
    train_step,
    training_batches,
)

from yolor_lightning.environment import cpu_model
from yolor_lightning.heap import freed_memory_kept
from yolor_lightning.train import process_settings

WARM_UP_STEPS = 2
VARIANTS = {
    "glibc's malloc thresholds as they come": "false",
    "trainer.keep_freed_memory=true (the default)": "true",
}
"""Each variant's value of ``trainer.keep_freed_memory``."""


def measure_steps(overrides: list[str], steps: int) -> dict[str, float]:
    """In this process, with the run's process settings: seconds and page faults of ``steps``
    training steps."""
    warnings.filterwarnings("ignore", message="You are trying to `self.log")
    cfg, module, optimizer = default_module(overrides)
    precision = precision_of(cfg)
    with process_settings(cfg):
        if cfg.trainer.keep_freed_memory and not freed_memory_kept():
            raise RuntimeError("the C library is not glibc: keep_freed_memory changes nothing")
        batches = training_batches(cfg, cfg.data.num_workers)
        for _ in range(WARM_UP_STEPS):
            train_step(module, optimizer, next(batches), precision)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def timed_steps() -> None:
            for _ in range(steps):
                train_step(module, optimizer, next(batches), precision)

        seconds = timed(timed_steps)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        batches.close()
    return {"seconds": seconds, "page_faults_per_step": faults / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", choices=sorted(set(VARIANTS.values())), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "heap_reuse.json")
    arguments = parser.parse_args()
    if arguments.child:
        setting = f"trainer.keep_freed_memory={arguments.child}"
        result = measure_steps([*arguments.overrides, setting], arguments.steps)
        print(json.dumps(result))
        return

    faults: dict[str, list[float]] = {name: [] for name in VARIANTS}

    def child(name: str) -> float:
        command = [sys.executable, __file__, "--child", VARIANTS[name]]
        command += ["--steps", str(arguments.steps), *arguments.overrides]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        faults[name].append(result["page_faults_per_step"])
        return result["seconds"]

    turns = timed_in_turns({name: (lambda n=name: child(n)) for name in VARIANTS}, arguments.rounds)
    cfg, _, _ = default_module(arguments.overrides)
    images = arguments.steps * cfg.data.batch_size
    for name, timing in turns["variants"].items():
        timing["images_per_second"] = round(images / timing["median_seconds"], 2)
        timing["throughput_ratio"] = round(1 / timing["time_ratio"], 3)
        timing["page_faults_per_step"] = [round(f) for f in faults[name]]
    record = {
        "command": invocation(),
        "cpu": cpu_model(),
        "precision": precision_of(cfg),
        "batch_size": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "timed_steps_per_round": arguments.steps,
        **turns,
        "note": "each measurement a fresh process (a malloc setting lasts for the process), the "
        "variants in turns; on a loaded machine compare the ratios, not the absolute times",
    }
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

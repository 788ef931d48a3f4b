"""Where the default run's training step spends its time: a torch.profiler summary.

    python benchmarks/profile_step.py [--steps 4] [--trace PATH] [--output FILE] [overrides ...]

Profiles real training steps of the default run (one shapes batch, the run's precision, threads
and heap setting ``trainer.keep_freed_memory``): the network's forward, the target assignment,
the loss, the backward pass, the optimiser and the EMA update (``RampedEMA``'s update over every
weight and buffer), each a labelled region. Per region: its time and the part of it spent
outside any aten operator (Python and dispatch overhead), with the operators it launched; and
the top operators by self time. Writes benchmarks/results/profile_step.json (or ``--output``, to
keep another machine's record beside it), and a Chrome trace with ``--trace``.
"""

from __future__ import annotations

import argparse
import functools
import os
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from records import add_output_option, invocation, write_record
from step_timing import default_module, precision_of, train_step, training_batches
from torch.optim.swa_utils import AveragedModel
from torch.profiler import ProfilerActivity, profile, record_function

from yolor_lightning.callbacks.ema import ramped_ema_update
from yolor_lightning.environment import cpu_model, usable_cores
from yolor_lightning.heap import freed_memory_kept
from yolor_lightning.train import process_settings

REGIONS = ("forward", "target assignment", "loss", "backward", "optimizer", "ema")
TOP_OPERATORS = 15


def labelled(owner: Any, attribute: str, label: str) -> None:
    """Run ``owner.attribute`` inside a profiler region named ``label``."""
    function: Callable = getattr(owner, attribute)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return function(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def region_of(event: Any) -> str | None:
    """The labelled region an operator event ran in (its innermost labelled ancestor)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in REGIONS:
            return parent.name
        parent = parent.cpu_parent
    return None


def top_level_operator(event: Any) -> bool:
    """An aten operator called from Python, not from within another operator."""
    parent = event.cpu_parent
    return event.name.startswith("aten::") and not (parent and parent.name.startswith("aten::"))


def summary(prof: profile, steps: int) -> dict[str, Any]:
    """Per region: ms per step, ms outside operators, operators per step; and top operators."""
    total: dict[str, float] = defaultdict(float)
    in_operators: dict[str, float] = defaultdict(float)
    operators: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.name in REGIONS:
            total[event.name] += event.cpu_time_total
        elif top_level_operator(event) and (region := region_of(event)):
            in_operators[region] += event.cpu_time_total
            operators[region] += 1
    regions = {
        name: {
            "ms_per_step": round(total[name] / steps / 1e3, 2),
            "ms_outside_operators_per_step": round(
                max(0.0, total[name] - in_operators[name]) / steps / 1e3, 2
            ),
            "operators_per_step": round(operators[name] / steps),
        }
        for name in REGIONS
    }
    averages = sorted(prof.key_averages(), key=lambda a: a.self_cpu_time_total, reverse=True)
    top = [
        {
            "operator": a.key,
            "self_ms_per_step": round(a.self_cpu_time_total / steps / 1e3, 2),
            "calls_per_step": round(a.count / steps, 1),
        }
        for a in averages
        if a.key not in REGIONS
    ][:TOP_OPERATORS]
    return {"regions": regions, "top_operators_by_self_time": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "profile_step.json")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore", message="You are trying to `self.log")
    cfg, module, optimizer = default_module(arguments.overrides)
    with process_settings(cfg):  # the run's threads and heap setting
        threads = torch.get_num_threads()
        precision = precision_of(cfg)
        batch = next(training_batches(cfg, num_workers=0))
        ema_settings = cfg.callbacks.ema
        ema = AveragedModel(
            module,
            use_buffers=True,
            multi_avg_fn=ramped_ema_update(ema_settings.decay, ema_settings.ramp_steps),
        )
        labelled(module.network, "forward", "forward")
        labelled(module.loss_fn, "assign", "target assignment")
        labelled(module.loss_fn, "forward", "loss")
        labelled(torch.Tensor, "backward", "backward")
        labelled(optimizer, "step", "optimizer")
        labelled(ema, "update_parameters", "ema")

        def step() -> None:
            train_step(module, optimizer, batch, precision)
            ema.update_parameters(module)

        for _ in range(2):  # warm-up: allocator, first-call initialisation
            step()
        load_before = os.getloadavg()[0]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(arguments.steps):
                step()
        record = {
            "command": invocation(),
            "cpu": cpu_model(),
            "load_average_1min": {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            },
            "usable_cores": usable_cores(),
            "threads": threads,
            "precision": precision,
            "batch_size": cfg.data.batch_size,
            "image_size": cfg.data.image_size,
            "profiled_steps": arguments.steps,
            "malloc_keeps_freed_memory": freed_memory_kept(),
            "note": "the profiler adds its own overhead, and on a loaded machine the absolute "
            "times grow: read the shares of the step",
            **summary(prof, arguments.steps),
        }
    write_record(arguments.output, record)
    if arguments.trace:
        prof.export_chrome_trace(str(arguments.trace))


if __name__ == "__main__":
    main()

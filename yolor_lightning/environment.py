"""What decides a run's numerics beyond its config: results.json records it.

With the same seed, config, versions and this environment, two runs are bit-identical (the
README says what is reproducible and what only statistically). A different thread count, CPU
instruction set, torch version or device changes the order of floating-point operations, so
the runs agree only statistically.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch


def cpuinfo_field(name: str) -> str | None:
    """The first value of ``name`` in ``/proc/cpuinfo`` (Linux), ``None`` where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what ``platform`` knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (``/proc/cpuinfo``) of instructions that run bfloat16 matrix products natively."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux: ``/proc/cpuinfo``; empty elsewhere)."""
    return set((cpuinfo_field("flags") or "").split())


def cpu_runs_bf16_natively() -> bool:
    """Whether this CPU has AVX-512 BF16 or AMX-BF16, on which a bfloat16 step is faster than
    a float32 one (elsewhere bfloat16 is emulated and slower)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def automatic_precision() -> str:
    """``trainer.precision: auto``: 16-bit mixed precision on CUDA, bfloat16 mixed precision on
    a CPU that runs it natively, else 32-bit."""
    if torch.cuda.is_available():
        return "16-mixed"
    return "bf16-mixed" if cpu_runs_bf16_natively() else "32-true"


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's, SLURM's or
    ``taskset``'s limit), where the platform has one, else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def node_processes(trainer: Mapping[str, Any]) -> int:
    """The training processes ``cfg.trainer`` starts on each node: its devices under DDP."""
    ddp = "ddp" in str(trainer.get("strategy"))
    devices = trainer.get("devices")
    return devices if ddp and isinstance(devices, int) else 1


def compute_threads(trainer: Mapping[str, Any], data_workers: int) -> int | None:
    """The torch thread count ``trainer.threads`` asks for (``trainer`` is ``cfg.trainer``).

    ``auto``: ``OMP_NUM_THREADS`` where the environment sets it (a job script's choice), else
    each training process of the node gets its share of the usable cores less its DataLoader
    workers, at least one. Workers busy on the same cores as the compute threads oversubscribe
    them, and an OpenMP thread preempted by a worker stalls its peers at every barrier. An
    integer is taken as given; ``null`` keeps torch's default (one per core).
    """
    setting = trainer.get("threads")
    if setting is None:
        return None
    if setting == "auto" and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if setting == "auto":
        return max(1, usable_cores() // node_processes(trainer) - data_workers)
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ValueError(
        f"config key trainer.threads={setting!r} is invalid: allowed values are 'auto', null "
        "or an integer >= 1"
    )


def evaluation_compute_threads(trainer: Mapping[str, Any], training: int | None) -> int | None:
    """The torch thread count of the validation and test loops (``trainer`` is ``cfg.trainer``).

    With ``trainer.threads: auto`` in a single process whose environment does not set
    ``OMP_NUM_THREADS``: every usable core, since the evaluation loader's workers only letterbox
    cached images while the training workers build mosaics. Otherwise ``training``, the count
    :func:`compute_threads` gave (a distributed run already splits the evaluation over its
    processes). Call it before :func:`compute_threads_set`, which sets ``OMP_NUM_THREADS``.
    """
    environment_sets = os.environ.get("OMP_NUM_THREADS", "").isdigit()
    if trainer.get("threads") == "auto" and not environment_sets and node_processes(trainer) == 1:
        return usable_cores()
    return training


@contextlib.contextmanager
def compute_threads_set(threads: int) -> Iterator[None]:
    """Run torch's CPU operators on ``threads`` threads inside the block, in this process and in
    the processes it starts (``OMP_NUM_THREADS``, which Lightning's DDP strategy then keeps).
    The previous thread count and ``OMP_NUM_THREADS`` come back at the end, so that a later run
    in this process (a multirun's next job, a notebook's second run) does not take this one's
    count for the environment's choice."""
    previous_threads = torch.get_num_threads()
    previous_variable = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        if previous_variable is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous_variable


def numerics_environment(data_workers: int, evaluation: int | None = None) -> dict[str, Any]:
    """Versions, threads and hardware of this process, its DataLoader worker count and the
    threads of its evaluation loops (``evaluation``; ``None``: those of training)."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "evaluation_threads": evaluation or torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "data_workers": data_workers,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_runs_bf16_natively(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
    }

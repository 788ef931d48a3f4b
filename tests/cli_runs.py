"""The command-line entry points run as a user runs them: a subprocess in a working directory.

DDP needs this: Lightning starts ranks > 0 by re-running the command line of the process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# A tiny run: 32 training images (4 steps of 8 in one process, 2 per rank with 2 ranks) and 16
# validation images at 64x64; the shapes dataset is generated once into the session's cache.
TINY = [
    "data.shapes.num_train=32",
    "data.shapes.num_val=16",
    "data.shapes.image_size=64",
    "data.image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
]
STEPS_PER_EPOCH = {1: 4, 2: 2}  # processes -> optimizer steps per epoch


def offline_environment(cache: Path) -> dict[str, str]:
    """The environment of a run started by a test: W&B offline and silent and the session's
    dataset cache, as tests/conftest.py sets them for each test (module-scoped fixtures run
    outside it), and one thread per process: these runs put 2 to 4 processes on 2 cores, and
    more threads than cores slow every process down many times over."""
    # WANDB_SERVICE: a W&B service this process started (an in-process test's run) would be
    # shared by the child, which then meets runs of other processes (a killed run's id "in use")
    dropped = {"WANDB_API_KEY", "WANDB_SERVICE"}
    environment = {key: value for key, value in os.environ.items() if key not in dropped}
    return environment | {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "YOLOR_LIGHTNING_CACHE": str(cache),
        "OMP_NUM_THREADS": "1",
    }


def start(module: str, *arguments: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``python -m module arguments`` in ``cwd``, in a session of its own (see finish)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for a started run. One still going after ``timeout`` seconds is killed, with every
    process it started (a rank left waiting for its peers would hold the output open forever)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{process.args} still ran after {timeout} s:\n{stderr[-6000:]}"
        ) from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run(
    module: str, *arguments: str, cwd: Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess:
    """``python -m module arguments`` in ``cwd``; with ``check``, a failure shows its stderr."""
    result = finish(start(module, *arguments, cwd=cwd, env=env))
    if check and result.returncode != 0:
        raise AssertionError(
            f"python -m {module} {' '.join(arguments)} exited with {result.returncode}:\n"
            f"{result.stderr[-6000:]}"
        )
    return result

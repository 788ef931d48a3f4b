"""The main job, measured: `python -m yolor_lightning` (what `make run` runs) with a fresh dataset
cache, timed as a whole process, its results.json figures recorded.

    python benchmarks/main_run.py [--output FILE] [extra overrides]

Writes benchmarks/results/main_run.json (or ``--output``): wall seconds (dataset generation
included), the final COCO metrics, parameters and GFLOPs, epochs and the run folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from records import add_output_option, write_record

from yolor_lightning.results import RESULTS_FILE, read_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run")
    add_output_option(parser, "main_run.json")
    arguments = parser.parse_intermixed_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        environment = {**os.environ, "YOLOR_LIGHTNING_CACHE": str(Path(scratch) / "cache")}
        command = [sys.executable, "-m", "yolor_lightning", f"hydra.run.dir={run_dir}"]
        started = time.perf_counter()
        subprocess.run([*command, *arguments.overrides], env=environment, check=True)
        wall = time.perf_counter() - started
        results = read_results(run_dir / RESULTS_FILE)
    record = {
        "command": " ".join(["python -m yolor_lightning", *arguments.overrides]),
        "wall_seconds": round(wall, 1),
        "fit_seconds": results["fit_seconds"],
        "cpu_count": os.cpu_count(),
        "metrics": {k: round(v, 4) for k, v in results["metrics"].items()},
        "model": results["model"],
        "epochs": results["epochs"],
        "steps": results["steps"],
    }
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

"""The main job, measured: `python -m yolor_lightning` (what `make run` runs) with a fresh dataset
cache, timed as a whole process, its results.json figures recorded.

    python benchmarks/main_run.py [extra overrides]

Writes benchmarks/results/main_run.json: wall seconds (dataset generation included), the final
COCO metrics, parameters and GFLOPs, epochs and the run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from yolor_lightning.results import RESULTS_FILE, read_results

RESULTS = Path(__file__).parent / "results" / "main_run.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        environment = {**os.environ, "YOLOR_LIGHTNING_CACHE": str(Path(scratch) / "cache")}
        command = [sys.executable, "-m", "yolor_lightning", f"hydra.run.dir={run_dir}"]
        started = time.perf_counter()
        subprocess.run([*command, *sys.argv[1:]], env=environment, check=True)
        wall = time.perf_counter() - started
        results = read_results(run_dir / RESULTS_FILE)
    record = {
        "command": "python -m yolor_lightning " + " ".join(sys.argv[1:]),
        "wall_seconds": round(wall, 1),
        "fit_seconds": results["fit_seconds"],
        "cpu_count": os.cpu_count(),
        "metrics": {k: round(v, 4) for k, v in results["metrics"].items()},
        "model": results["model"],
        "epochs": results["epochs"],
        "steps": results["steps"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""``results.json``: the contract between a run and the tools that compare runs (report, W&B)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


def write_results(output_dir: Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically (temporary file, then rename)."""
    path = Path(output_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{RESULTS_FILE}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

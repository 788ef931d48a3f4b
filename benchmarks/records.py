"""Where a benchmark keeps what it measured: a JSON record under benchmarks/results/, or the file
``--output`` names (to keep another machine's record beside the committed one).

Records are written whole or not at all, so a benchmark stopped while writing leaves the last
record as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from yolor_lightning.atomic import atomic_path

RESULTS = Path(__file__).parent / "results"


def add_output_option(parser: argparse.ArgumentParser, default_name: str) -> None:
    """``--output FILE``: where the record goes, by default benchmarks/results/``default_name``."""
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / default_name,
        help=f"the JSON record to write (default: benchmarks/results/{default_name})",
    )


def invocation() -> str:
    """The command line that ran this benchmark, as its record keeps it."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def read_record(path: Path) -> dict[str, Any]:
    """The record at ``path``, for benchmarks that add to it; empty where there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def write_record(path: Path, record: dict[str, Any], show: bool = True) -> None:
    """Write ``record`` to ``path`` atomically; print it (``show``) and where it went."""
    text = json.dumps(record, indent=2) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    if show:
        print(text, end="")
    print(f"wrote {path}")

"""``python -m yolor_lightning.report DIR [DIR ...] [--out OUT_DIR] [--baseline NAME]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from yolor_lightning.report import ReportError, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m yolor_lightning.report",
        description="Summarise the results.json files of runs (multirun folders, run folders) as "
        "a markdown and CSV table with mean ± std over seeds and Δ against a baseline, and a PNG "
        "chart.",
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    parser.add_argument(
        "--out", type=Path, help="where to write report.md/.csv/.png (default: the first DIR)"
    )
    parser.add_argument(
        "--baseline",
        metavar="NAME",
        help="configuration (label or experiment) that Δ is against (default: baseline)",
    )
    arguments = parser.parse_args(argv)
    try:
        report = write_report(arguments.folders, arguments.out, arguments.baseline)
    except ReportError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(report.markdown)
    for path in report.paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""``python -m yolor_lightning.report DIR [DIR ...] [--out OUT_DIR] [--baseline NAME]
[--metric AP] [--resamples 1000] [--bootstrap-seed 0]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from yolor_lightning.report import ReportError, write_report
from yolor_lightning.report.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m yolor_lightning.report",
        description="Summarise the results.json files of runs (multirun folders, run folders) as "
        "a markdown and CSV table with mean ± std over seeds and Δ against a baseline, compare "
        "each configuration with its baseline seed by seed (interval, sign-flip p, Holm, "
        "verdict, evaluation noise), and draw a PNG chart.",
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
    parser.add_argument(
        "--metric", default="AP", help="metric of the paired comparison (default: AP)"
    )
    parser.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_RESAMPLES,
        help="bootstrap resamples of the validation images for the evaluation noise "
        f"(default: {DEFAULT_RESAMPLES}; 0: skip)",
    )
    parser.add_argument(
        "--bootstrap-seed", type=int, default=DEFAULT_SEED, help="seed of the resamples"
    )
    arguments = parser.parse_args(argv)
    try:
        report = write_report(
            arguments.folders,
            arguments.out,
            arguments.baseline,
            arguments.metric,
            arguments.resamples,
            arguments.bootstrap_seed,
        )
    except ReportError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(report.markdown)
    for path in report.paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

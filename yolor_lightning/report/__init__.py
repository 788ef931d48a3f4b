"""Ablation report: the results.json files of one or more runs as a paper-style table and chart.

``python -m yolor_lightning.report DIR [DIR ...]`` (see ``__main__``); ``write_report`` does the
same from Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from yolor_lightning.report import verdicts
from yolor_lightning.report.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from yolor_lightning.report.chart import plot
from yolor_lightning.report.comparison import Comparison, compare
from yolor_lightning.report.jobs import Job, ReportError, find_jobs
from yolor_lightning.report.table import Table, build_table, to_markdown, write_csv

__all__ = [
    "Comparison",
    "Job",
    "Report",
    "ReportError",
    "Table",
    "build_table",
    "find_jobs",
    "write_report",
]


def select_experiments(
    jobs: Sequence[Job], experiments: Sequence[str], folders: Sequence[Path]
) -> list[Job]:
    """The jobs of ``experiments``; every one named must have a job."""
    present = sorted({job.experiment for job in jobs})
    missing = [name for name in experiments if name not in present]
    if missing:
        raise ReportError(
            f"experiments={list(experiments)}: no job of {', '.join(missing)} under "
            f"{', '.join(map(str, folders))}; experiments there: {', '.join(present)}"
        )
    return [job for job in jobs if job.experiment in experiments]


@dataclass(frozen=True)
class Report:
    table: Table
    comparisons: list[Comparison]
    markdown: str
    paths: list[Path]


def write_report(
    folders: Sequence[Path],
    out: Path | None = None,
    baseline: str | None = None,
    metric: str = "AP",
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
    experiments: Sequence[str] | None = None,
) -> Report:
    """Write ``report.md``, ``report.csv`` and ``report.png`` into ``out`` (default: the first
    folder). ``baseline`` names the configuration Δ is computed against (label or experiment);
    the paired comparison (see :mod:`yolor_lightning.report.comparison`) is on ``metric``, its
    evaluation noise from ``resamples`` bootstrap resamples drawn with ``bootstrap_seed``
    (0 resamples: none). ``experiments`` keeps only those experiments' jobs (one table of a
    sweep over many; Holm's correction then spans its rows only); None keeps every job."""
    folders = [Path(folder) for folder in folders]
    jobs = find_jobs(folders)
    if experiments is not None:
        jobs = select_experiments(jobs, experiments, folders)
    if all(job.results is None for job in jobs):
        failed = "; ".join(f"{job.folder} ({job.failure})" for job in jobs)
        raise ReportError(
            f"no finished runs under {', '.join(map(str, folders))}: "
            f"{len(jobs)} failed jobs: {failed}"
        )
    table = build_table(jobs, baseline)
    comparisons = compare(table, metric, resamples, bootstrap_seed)
    out = Path(out) if out is not None else folders[0]
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, folders) + "".join(
        line + "\n" for line in verdicts.markdown(comparisons)
    )
    paths = [out / "report.md", out / "report.csv", out / "report.png"]
    paths[0].write_text(markdown)
    columns = {c.row: verdicts.csv_columns(c) for c in comparisons}
    write_csv(table, paths[1], columns, verdicts.CSV_COLUMNS if comparisons else ())
    plot(table, comparisons, paths[2])
    return Report(table, comparisons, markdown, paths)

"""Ablation report: the results.json files of one or more runs as a paper-style table and chart.

``python -m yolor_lightning.report DIR [DIR ...]`` (see ``__main__``); ``write_report`` does the
same from Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from yolor_lightning.report.chart import plot
from yolor_lightning.report.jobs import Job, ReportError, find_jobs
from yolor_lightning.report.table import Table, build_table, to_markdown, write_csv

__all__ = ["Job", "Report", "ReportError", "Table", "build_table", "find_jobs", "write_report"]


@dataclass(frozen=True)
class Report:
    table: Table
    markdown: str
    paths: list[Path]


def write_report(
    folders: Sequence[Path], out: Path | None = None, baseline: str | None = None
) -> Report:
    """Write ``report.md``, ``report.csv`` and ``report.png`` into ``out`` (default: the first
    folder). ``baseline`` names the configuration Δ is computed against (label or experiment)."""
    folders = [Path(folder) for folder in folders]
    jobs = find_jobs(folders)
    if all(job.results is None for job in jobs):
        failed = "; ".join(f"{job.folder} ({job.failure})" for job in jobs)
        raise ReportError(
            f"no finished runs under {', '.join(map(str, folders))}: "
            f"{len(jobs)} failed jobs: {failed}"
        )
    table = build_table(jobs, baseline)
    out = Path(out) if out is not None else folders[0]
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, folders)
    paths = [out / "report.md", out / "report.csv", out / "report.png"]
    paths[0].write_text(markdown)
    write_csv(table, paths[1])
    plot(table, paths[2])
    return Report(table, markdown, paths)

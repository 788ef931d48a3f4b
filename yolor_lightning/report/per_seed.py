"""What the report's table averages away: each configuration's seeds one by one.

The table shows mean ± std per configuration and the paired comparison reduces pairs to
intervals; these are the points behind them (one per seed, the same seed joined across
configurations, as the pairs are made) and, to look inside a configuration, a checkpoint of it.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from yolor_lightning.report.chart import wrap
from yolor_lightning.report.table import AP_METRICS, Row, Table

CHECKPOINT = Path("checkpoints") / "best.ckpt"
"""Where a job folder keeps its best checkpoint (``python -m yolor_lightning``'s layout)."""


def seed_values(table: Table, metric: str = "AP") -> dict[str, dict[str, float]]:
    """``{configuration label: {seed: metric}}`` over the finished runs that report ``metric``."""
    return {
        row.label: {
            str(job.seed): float(job.results["metrics"][metric])
            for job in row.jobs
            if job.results is not None and metric in job.results.get("metrics", {})
        }
        for row in table.rows
    }


def plot_seed_points(table: Table, metric: str = "AP") -> Figure:
    """Each seed's ``metric`` per configuration (AP metrics in percent), one line per seed
    joining its runs across configurations: a seed that is high everywhere is the seed, not
    the configuration."""
    values = seed_values(table, metric)
    labels = list(values)
    scale = 100.0 if metric in AP_METRICS else 1.0
    seeds = sorted({seed for per_seed in values.values() for seed in per_seed}, key=str)
    figure = Figure(figsize=(max(6.0, 1.2 * len(labels) + 2), 4), layout="constrained")
    axes = figure.subplots()
    for seed in seeds:
        points = [
            (x, values[label][seed]) for x, label in enumerate(labels) if seed in values[label]
        ]
        xs = [x for x, _ in points]
        axes.plot(xs, [scale * v for _, v in points], "o-", lw=0.8, label=f"seed {seed}")
    axes.set_xticks(range(len(labels)), [wrap(label) for label in labels], fontsize=8)
    axes.set_ylabel(f"{metric}" + (" (%)" if scale == 100 else ""))
    axes.set_title(f"{metric} of every run, seeds joined across configurations")
    axes.grid(axis="y", alpha=0.3)
    if seeds:
        axes.legend(fontsize="small")
    return figure


def seed_checkpoint(row: Row) -> Path | None:
    """The best checkpoint of the configuration's first seed that still has one in its job
    folder (sweeps copied without checkpoints, as in ``experiments/``, have none)."""
    for job in row.jobs:
        path = job.folder / CHECKPOINT
        if path.is_file():
            return path
    return None

"""The report's PNG: AP per configuration with its spread, each configuration's paired Δ
against its baseline with its intervals and zero, and AP against parameters.

Drawn on a bare ``matplotlib.figure.Figure`` (rendered by Agg), so no display and no pyplot
global state are involved.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from yolor_lightning.report.comparison import BETTER, WORSE, Comparison
from yolor_lightning.report.table import AP_METRICS, Table

LABEL_WIDTH = 32


def wrap(label: str) -> str:
    return textwrap.fill(label, LABEL_WIDTH, break_long_words=True)


VERDICT_COLORS = {BETTER: "tab:green", WORSE: "tab:red"}


def draw_paired(axes: Axes, comparisons: Sequence[Comparison]) -> None:
    """Mean paired Δ per configuration: thin bar its 95% t-interval, thick bar its Holm
    interval (the verdict's), coloured by verdict; the dashed line is zero."""
    shown = [c for c in comparisons if c.mean is not None]
    scale = 100.0 if shown and shown[0].metric in AP_METRICS else 1.0
    for position, c in enumerate(shown):
        color = VERDICT_COLORS.get(c.verdict, "tab:grey")
        for bounds, width in ((c.interval, 1), (c.holm_interval, 4)):
            if bounds is not None:
                axes.hlines(position, *(scale * b for b in bounds), color=color, lw=width)
        axes.plot(scale * c.mean, position, "o", color=color)
    axes.axvline(0, color="black", linestyle="--", lw=1)
    axes.set_yticks(range(len(shown)), [wrap(c.row.label) for c in shown], fontsize=9)
    axes.invert_yaxis()
    metric = shown[0].metric if shown else "AP"
    axes.set_xlabel(f"paired Δ {metric}" + (" (points)" if scale == 100 else ""))
    axes.set_title("Δ against the baseline: 95% CI (thin), Holm CI (thick)")
    axes.grid(axis="x", alpha=0.3)


def plot(table: Table, comparisons: Sequence[Comparison], path: Path) -> None:
    """Write :func:`report_figure` to ``path`` (the report's PNG)."""
    report_figure(table, comparisons).savefig(path, dpi=120)


def report_figure(table: Table, comparisons: Sequence[Comparison]) -> Figure:
    """AP ± one sample std per configuration; paired Δ against the baseline (when any row has
    one); AP against parameters (training form).

    Configurations without AP (a task that does not detect) are left out of the AP panels.
    """
    rows = [row for row in table.rows if "AP" in row.metrics]
    if not rows:
        figure = Figure(figsize=(6, 2))
        figure.text(0.5, 0.5, "no configuration reports AP", ha="center", va="center")
        return figure
    ap = [100 * row.metrics["AP"].mean for row in rows]
    spread = [100 * (row.metrics["AP"].std or 0.0) for row in rows]
    labels = [wrap(row.label) for row in rows]
    lines_per_label = max(label.count("\n") + 1 for label in labels)
    figure = Figure(
        figsize=(
            13 + 6 * bool(comparisons),
            max(3.5, 1.5 + len(rows) * 0.3 * (1 + lines_per_label)),
        ),
        layout="constrained",
    )
    if comparisons:
        points, paired, scatter = figure.subplots(1, 3, width_ratios=(3, 3, 2))
        draw_paired(paired, comparisons)
    else:
        points, scatter = figure.subplots(1, 2, width_ratios=(3, 2))

    positions = range(len(rows))
    points.errorbar(ap, positions, xerr=spread, fmt="o", capsize=3)
    points.set_yticks(list(positions), labels, fontsize=9)
    points.invert_yaxis()
    for position, value in zip(positions, ap, strict=True):
        points.annotate(
            f"{value:.1f}",
            (value, position),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    baselines = {row.baseline for row in rows if row.baseline in rows}
    for baseline in baselines:
        points.axvline(100 * baseline.metrics["AP"].mean, color="grey", linestyle="--", lw=1)
    points.margins(x=0.1, y=0.5 / len(rows))
    points.set_xlabel("AP (%), mean ± sample std over seeds")
    points.set_title("AP per configuration" + (" (dashed: baseline)" if baselines else ""))
    points.grid(axis="x", alpha=0.3)

    sized = [
        (row, value, error)
        for row, value, error in zip(rows, ap, spread, strict=True)
        if "params" in row.cost
    ]
    if sized:
        params = [row.cost["params"] / 1e6 for row, _, _ in sized]
        scatter.errorbar(
            params,
            [value for _, value, _ in sized],
            yerr=[error for _, _, error in sized],
            fmt="o",
            capsize=3,
        )
        for x, (row, value, _) in zip(params, sized, strict=True):
            scatter.annotate(
                wrap(row.label),
                (x, value),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=7,
            )
        scatter.ticklabel_format(axis="x", useOffset=False)
        scatter.margins(x=0.25, y=0.1)
    scatter.set_xlabel("parameters, training form (millions)")
    scatter.set_ylabel("AP (%)")
    scatter.set_title("AP against parameters")
    scatter.grid(alpha=0.3)
    return figure

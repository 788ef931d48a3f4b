"""The report's PNG: AP per configuration with its spread, and AP against parameters.

Drawn on a bare ``matplotlib.figure.Figure`` (rendered by Agg), so no display and no pyplot
global state are involved.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from yolor_lightning.report.table import Table

LABEL_WIDTH = 32


def wrap(label: str) -> str:
    return textwrap.fill(label, LABEL_WIDTH, break_long_words=True)


def plot(table: Table, path: Path) -> None:
    """Left: AP ± one sample std per configuration. Right: AP against parameters (training form).

    Configurations without AP (a task that does not detect) are left out of the chart.
    """
    rows = [row for row in table.rows if "AP" in row.metrics]
    if not rows:
        figure = Figure(figsize=(6, 2))
        figure.text(0.5, 0.5, "no configuration reports AP", ha="center", va="center")
        figure.savefig(path, dpi=120)
        return
    ap = [100 * row.metrics["AP"].mean for row in rows]
    spread = [100 * (row.metrics["AP"].std or 0.0) for row in rows]
    labels = [wrap(row.label) for row in rows]
    lines_per_label = max(label.count("\n") + 1 for label in labels)
    figure = Figure(
        figsize=(13, max(3.5, 1.5 + len(rows) * 0.3 * (1 + lines_per_label))),
        layout="constrained",
    )
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
    figure.savefig(path, dpi=120)

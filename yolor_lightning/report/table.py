"""The paper-style table: one row per configuration, its seeds summarised, Δ against a baseline.

A configuration is a run's experiment plus its command-line overrides other than ``seed``; its
seeds are summarised by their mean and sample standard deviation (``ddof=1``). A single seed has
no spread: the table shows its value alone rather than a misleading ``± 0``.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yolor_lightning.report.jobs import Job, ReportError, override_key

AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TASK_METRIC_PREFIXES = ("cls/", "emb/")
DELTA_METRICS = ("AP", "AP50")
COST_NAMES = {
    "params": "params",
    "gflops": "GFLOPs",
    "params_folded": "params (folded)",
    "gflops_folded": "GFLOPs (folded)",
}
DEFAULT_BASELINE = "baseline"


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation over seeds; ``std`` is ``None`` for one seed."""

    mean: float
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std)


@dataclass(eq=False)
class Row:
    """One configuration: its finished seeds, their metrics and cost, and Δ to its baseline."""

    label: str
    experiment: str
    overrides: tuple[str, ...]
    jobs: list[Job]
    metrics: dict[str, Spread]
    cost: dict[str, float]
    baseline: Row | None = None
    delta: dict[str, float] = field(default_factory=dict)

    @property
    def seeds(self) -> list[str | None]:
        return [job.seed for job in self.jobs]


@dataclass(frozen=True)
class Failed:
    """A job that left no metrics, listed under the configuration it belongs to."""

    label: str
    job: Job


@dataclass(frozen=True)
class Table:
    rows: list[Row]
    failed: list[Failed]
    shared_overrides: tuple[str, ...]
    metric_names: tuple[str, ...]
    cost_names: tuple[str, ...]
    baseline_name: str

    @property
    def has_baseline(self) -> bool:
        return any(row.baseline is not None for row in self.rows)


def without_experiment(overrides: Sequence[str]) -> tuple[str, ...]:
    return tuple(o for o in overrides if override_key(o) != "experiment")


def summarise(jobs: Sequence[Job]) -> tuple[dict[str, Spread], dict[str, float]]:
    """Metrics (AP and multi-task ones, over the seeds that have them) and the model's cost."""
    task_metrics = {
        key
        for job in jobs
        for key in job.results["metrics"]
        if key.startswith(TASK_METRIC_PREFIXES)
    }
    metrics = {}
    for name in (*AP_METRICS, *sorted(task_metrics)):
        values = [job.results["metrics"][name] for job in jobs if name in job.results["metrics"]]
        if values:
            metrics[name] = Spread.of(values)
    model = jobs[0].results.get("model", {})
    cost = {name: model[name] for name in COST_NAMES if name in model}
    return metrics, cost


def select_baselines(rows: list[Row], name: str, required: bool) -> None:
    """Give each row its baseline: the row named ``name`` that shares most of its overrides.

    ``name`` matches a row's label or its experiment. A single match is every row's baseline; of
    several (a sweep of ``+experiment=baseline,ifa_mul model.size=tiny,small``), each row takes
    the one sharing the most overrides with it, and none when two share equally many.
    """
    candidates = [row for row in rows if row.label == name] or [
        row for row in rows if row.experiment == name
    ]
    if not candidates:
        if required:
            labels = ", ".join(repr(row.label) for row in rows)
            raise ReportError(f"--baseline {name!r} matches no configuration: have {labels}")
        return
    for row in rows:
        settings = set(without_experiment(row.overrides))
        shared = [len(settings & set(without_experiment(c.overrides))) for c in candidates]
        best = [c for c, n in zip(candidates, shared, strict=True) if n == max(shared)]
        if len(best) == 1:
            (row.baseline,) = best
            row.delta = {
                metric: row.metrics[metric].mean - row.baseline.metrics[metric].mean
                for metric in DELTA_METRICS
                if metric in row.metrics and metric in row.baseline.metrics
            }


def build_table(jobs: Sequence[Job], baseline: str | None = None) -> Table:
    """Group jobs (at least one finished) into configurations.

    ``baseline`` given explicitly must name a configuration; the default may be absent.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.configuration, []).append(job)
    shared = tuple(
        o for o in next(iter(groups))[1] if all(o in overrides for _, overrides in groups)
    )

    def label(experiment: str, overrides: tuple[str, ...]) -> str:
        varying = [o for o in without_experiment(overrides) if o not in shared]
        return " ".join([experiment, *varying])

    rows, failed = [], []
    for (experiment, overrides), members in groups.items():
        finished = [job for job in members if job.results is not None]
        failed += [Failed(label(experiment, overrides), job) for job in members if job.failure]
        if finished:
            metrics, cost = summarise(finished)
            rows.append(
                Row(label(experiment, overrides), experiment, overrides, finished, metrics, cost)
            )
    select_baselines(rows, baseline or DEFAULT_BASELINE, required=baseline is not None)
    present = {name for row in rows for name in row.metrics}
    metric_names = (
        *(name for name in AP_METRICS if name in present),
        *sorted(present.difference(AP_METRICS)),
    )
    cost_names = tuple(name for name in COST_NAMES if any(name in row.cost for row in rows))
    return Table(rows, failed, shared, metric_names, cost_names, baseline or DEFAULT_BASELINE)


def format_spread(name: str, spread: Spread) -> str:
    """COCO AP in percent with one decimal, as papers print it; other metrics as logged."""
    scale, digits = (100.0, 1) if name in AP_METRICS else (1.0, 3)
    mean = f"{spread.mean * scale:.{digits}f}"
    return mean if spread.std is None else f"{mean} ± {spread.std * scale:.{digits}f}"


def format_cost(name: str, value: float) -> str:
    return f"{int(value):,}" if name.startswith("params") else f"{value:.3f}"


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cell(text) for text in line) + " |" for line in lines),
    ]


def to_markdown(table: Table, sources: Sequence[Path]) -> str:
    runs = sum(len(row.jobs) for row in table.rows)
    folders = ", ".join(f"`{source}`" for source in sources)
    text = [
        "# Ablation report",
        "",
        f"{count(len(table.rows), 'configuration')}, {count(runs, 'finished run')}, "
        f"{count(len(table.failed), 'failed job')}, from {folders}.",
        "",
        "COCO AP metrics in percent: mean ± sample standard deviation over seeds (one seed: its "
        "value alone). Multi-task metrics as logged. Parameters and GFLOPs of one run.",
    ]
    if table.shared_overrides:
        shared = " ".join(f"`{o}`" for o in table.shared_overrides)
        text += ["", f"Overrides shared by every configuration: {shared}"]
    if table.has_baseline:
        text += ["", f"Δ: difference of the mean AP against `{table.baseline_name}`, in points."]
    else:
        text += ["", f"No `{table.baseline_name}` configuration: no Δ column."]

    deltas = [f"Δ {name}" for name in DELTA_METRICS] if table.has_baseline else []
    header = [
        "configuration",
        "n seeds",
        *table.metric_names,
        *deltas,
        *(COST_NAMES[name] for name in table.cost_names),
    ]
    lines = []
    for row in table.rows:
        metrics = [
            format_spread(name, row.metrics[name]) if name in row.metrics else ""
            for name in table.metric_names
        ]
        if not deltas:
            delta = []
        elif row.baseline is row:
            delta = ["baseline", ""]
        else:
            delta = [f"{100 * row.delta[n]:+.1f}" if n in row.delta else "" for n in DELTA_METRICS]
        costs = [
            format_cost(name, row.cost[name]) if name in row.cost else ""
            for name in table.cost_names
        ]
        lines.append([f"`{row.label}`", str(len(row.jobs)), *metrics, *delta, *costs])
    text += ["", *markdown_table(header, lines)]

    if table.failed:
        failed = [
            [
                f"`{f.label}`",
                f.job.seed or "",
                " ".join(f"`{o}`" for o in f.job.overrides),
                f"`{f.job.folder}`",
                f.job.failure or "",
            ]
            for f in table.failed
        ]
        text += [
            "",
            "## Failed jobs",
            "",
            *markdown_table(["configuration", "seed", "overrides", "folder", "reason"], failed),
        ]
    return "\n".join(text) + "\n"


def csv_header(table: Table) -> list[str]:
    """Columns in results.json units (AP as a fraction), every cost and Δ column always there."""
    return [
        "status",
        "configuration",
        "experiment",
        "overrides",
        "seeds",
        "n_seeds",
        *(f"{name}_{stat}" for name in table.metric_names for stat in ("mean", "std")),
        "baseline",
        *(f"delta_{name}" for name in DELTA_METRICS),
        *COST_NAMES,
        "folders",
        "reason",
    ]


def write_csv(
    table: Table,
    path: Path,
    extra: Mapping[Row, Mapping[str, object]] | None = None,
    extra_columns: Sequence[str] = (),
) -> None:
    """One ``ok`` row per configuration, then one ``failed`` row per failed job; ``extra``
    adds the ``extra_columns`` of some rows (the paired comparison)."""
    extra = extra or {}
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*csv_header(table), *extra_columns], restval="")
        writer.writeheader()
        for row in table.rows:
            record: dict[str, object] = {
                "status": "ok",
                "configuration": row.label,
                "experiment": row.experiment,
                "overrides": " ".join(row.overrides),
                "seeds": " ".join(seed or "?" for seed in row.seeds),
                "n_seeds": len(row.jobs),
                "baseline": row.baseline.label if row.baseline else "",
                "folders": ";".join(str(job.folder) for job in row.jobs),
            }
            for name, spread in row.metrics.items():
                record[f"{name}_mean"] = spread.mean
                record[f"{name}_std"] = "" if spread.std is None else spread.std
            record |= {f"delta_{name}": value for name, value in row.delta.items()}
            record |= row.cost
            record |= extra.get(row, {})
            writer.writerow(record)
        for failure in table.failed:
            job = failure.job
            writer.writerow(
                {
                    "status": "failed",
                    "configuration": failure.label,
                    "experiment": job.experiment,
                    "overrides": " ".join(job.configuration[1]),
                    "seeds": job.seed or "",
                    "n_seeds": 0,
                    "folders": str(job.folder),
                    "reason": job.failure,
                }
            )

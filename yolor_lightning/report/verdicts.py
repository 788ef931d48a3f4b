"""The paired comparison as the report's markdown section and its CSV columns.

Markdown shows AP metrics in points (×100); the CSV keeps results.json units (AP as a fraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yolor_lightning.report.comparison import ALPHA, CONFIDENCE, TARGET_POWER, Comparison
from yolor_lightning.report.table import AP_METRICS, markdown_table

CSV_COLUMNS = (
    "paired_metric",
    "pairs",
    "pair_deltas",
    "mean_delta",
    "ci_low",
    "ci_high",
    "holm_level",
    "holm_low",
    "holm_high",
    "p_sign_flip",
    "p_sign_flip_holm",
    "p_t",
    "p_t_holm",
    "won",
    "verdict",
    "mde",
    "eval_std",
    "eval_low",
    "eval_high",
    "unpaired",
)


def scale(metric: str) -> float:
    return 100.0 if metric in AP_METRICS else 1.0


def signed(value: float, metric: str) -> str:
    return f"{value * scale(metric):+.2f}"


def interval(bounds: tuple[float, float] | None, metric: str) -> str:
    return "" if bounds is None else f"[{signed(bounds[0], metric)}, {signed(bounds[1], metric)}]"


def p_value(p: float | None) -> str:
    return "" if p is None else f"{p:.3g}"


def row_cells(c: Comparison) -> list[str]:
    metric = c.metric
    per_pair = " ".join(f"{pair.seed}:{signed(pair.delta, metric)}" for pair in c.pairs)
    mean = "" if c.mean is None else signed(c.mean, metric)
    noise = (
        f"± {c.noise.std * scale(metric):.2f} {interval((c.noise.low, c.noise.high), metric)}"
        if c.noise
        else c.noise_note
    )
    return [
        f"`{c.row.label}`",
        f"`{c.row.baseline.label}`",
        str(c.n),
        per_pair,
        f"{mean} {interval(c.interval, metric)}".strip(),
        interval(c.holm_interval, metric),
        p_value(c.p_sign_flip),
        p_value(c.p_sign_flip_holm),
        "" if c.won is None else f"{c.won:.0%}",
        c.verdict if c.tested else f"{c.verdict} ({c.n} pair{'s' * (c.n != 1)})",
        "" if c.mde is None else f"{c.mde * scale(metric):.2f}",
        noise,
    ]


def markdown(comparisons: Sequence[Comparison]) -> list[str]:
    """The section: its table, what each column means, then the unpaired runs."""
    if not comparisons:
        return []
    metric = comparisons[0].metric
    unit = "points" if metric in AP_METRICS else "as logged"
    text = [
        "",
        f"## Paired comparison: Δ {metric} against the baseline, seed by seed",
        "",
        f"Δ: configuration minus baseline, runs with the same seed, in {unit}. "
        f"mean Δ [{CONFIDENCE:.0%} CI]: t-interval over the pairs. "
        "p: exact two-sided sign-flip permutation p-value; p Holm: Holm-adjusted across the rows. "
        "won: share of pairs with Δ > 0. "
        f"Verdict: better / worse when the paired t-test is significant at α = {ALPHA} after "
        "Holm's correction, i.e. the interval at the row's Holm level (Holm CI) excludes zero "
        "(and so do those of the rows ranked before it); otherwise not resolved, with MDE: the "
        f"smallest true Δ found with {TARGET_POWER:.0%} power at that level, given the "
        "measured spread of the pair differences. eval noise: standard deviation and 95% "
        "interval of mean Δ over bootstrap resamples of the validation images (the same images "
        "for both runs of a pair), the trained weights held fixed.",
        "",
        *markdown_table(
            [
                "configuration",
                "baseline",
                "n",
                "Δ per pair (seed:Δ)",
                f"mean Δ [{CONFIDENCE:.0%} CI]",
                "Holm CI",
                "p",
                "p Holm",
                "won",
                "verdict",
                f"MDE ({TARGET_POWER:.0%} power)",
                "eval noise",
            ],
            [row_cells(c) for c in comparisons],
        ),
    ]
    unpaired = [
        [f"`{c.row.label}`", u.seed, f"`{u.job.folder}`", u.reason]
        for c in comparisons
        for u in c.unpaired
    ]
    if unpaired:
        text += [
            "",
            "## Unpaired runs",
            "",
            "Finished runs left out of the paired statistics. A pair needs the same seed and "
            "the same numerics environment (device, CPU model and instruction set, torch and "
            "CUDA versions, torch threads, from results.json): rounding alone moves a run's AP.",
            "",
            *markdown_table(["configuration", "seed", "folder", "reason"], unpaired),
        ]
    return text


def csv_columns(c: Comparison) -> dict[str, Any]:
    """``CSV_COLUMNS`` of one row (empty where not defined)."""
    bounds = {
        "ci": c.interval,
        "holm": c.holm_interval,
        "eval": (c.noise.low, c.noise.high) if c.noise else None,
    }
    record: dict[str, Any] = {
        "paired_metric": c.metric,
        "pairs": c.n,
        "pair_deltas": " ".join(f"{pair.seed}:{pair.delta!r}" for pair in c.pairs),
        "mean_delta": c.mean,
        "holm_level": c.level,
        "p_sign_flip": c.p_sign_flip,
        "p_sign_flip_holm": c.p_sign_flip_holm,
        "p_t": c.p_t,
        "p_t_holm": c.p_t_holm,
        "won": c.won,
        "verdict": c.verdict,
        "mde": c.mde,
        "eval_std": c.noise.std if c.noise else None,
        "unpaired": " ".join(f"{u.seed}:{u.job.folder}" for u in c.unpaired),
    }
    for name, pair in bounds.items():
        record[f"{name}_low"], record[f"{name}_high"] = pair or (None, None)
    return {key: "" if value is None else value for key, value in record.items()}

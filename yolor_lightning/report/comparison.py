"""Each configuration against its baseline, run for run: pairs, statistics, verdict.

What is paired: two finished runs with the same seed in the same numerics environment
(``NUMERICS_KEYS``), one of the configuration and one of its baseline (the configuration the
table gives it, ``table.select_baselines``). The environment is part of the pair because the
rounding of other kernels alone moves a run: the baseline's seeds 2-5 at one commit scored 1.3
to 2.7 AP points lower on an AMD EPYC than on an Intel Xeon, all four (experiments/README.md). A
seed that only one side has, or has only in another environment, or a second run of a seed on
one side, is listed as unpaired and left out of the statistics. Per pair,
Δ = metric(configuration) − metric(baseline).

Per configuration (n pairs): mean Δ with its 95% t-interval, the exact sign-flip p-value, the
paired t-test p-value, the share of pairs it wins (Δ > 0), and, from per-image evaluation
results where every run left them, the evaluation noise of mean Δ (paired bootstrap over
validation images, :mod:`yolor_lightning.report.bootstrap`).

Across the table's rows (those with at least two pairs) Holm's correction holds the family-wise
error at α = 0.05. Verdict rule: a row is *better* (*worse*) when its Holm-adjusted paired t-test
p <= α, i.e. when its t-interval at its Holm level (α / (m − k) for the k-th smallest p of m)
excludes zero, as do the intervals of every row ranked before it; its sign says which. Otherwise
it is *not resolved*, and MDE is the minimum detectable effect at 80% power at that same level
with the measured standard deviation of its pair differences
(:func:`~yolor_lightning.report.statistics.minimum_detectable_effect`). The sign-flip p (and its
Holm adjustment) is the check that assumes nothing about the shape of the differences; with n
pairs it cannot go below 2 / 2^n.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from yolor_lightning.report.bootstrap import (
    BOOTSTRAP_METRICS,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    EvaluationNoise,
    bootstrap_ap,
    evaluation_noise,
    resample_counts,
)
from yolor_lightning.report.jobs import Job
from yolor_lightning.report.statistics import (
    holm,
    holm_levels,
    minimum_detectable_effect,
    paired_t_p_value,
    sign_flip_p_value,
    t_interval,
)
from yolor_lightning.report.table import Row, Table
from yolor_lightning.tasks.per_image import PER_IMAGE_FILE, PerImageResults

ALPHA = 0.05
CONFIDENCE = 0.95
TARGET_POWER = 0.8
BETTER, WORSE, NOT_RESOLVED = "better", "worse", "not resolved"


NUMERICS_KEYS = ("device", "cuda", "torch", "cpu", "cpu_capability", "torch_threads")
"""The parts of results.json's ``environment`` that change floating-point rounding: kernels
(device, CPU model and instruction set, library versions) and the order of threaded sums."""


def environment_differences(job: Job, other: Job) -> dict[str, tuple[Any, Any]]:
    """What of ``NUMERICS_KEYS`` the two runs recorded differently, as (job, other); keys that
    either run did not record are not compared."""
    first, second = (j.results.get("environment") or {} for j in (job, other))
    return {
        key: (first[key], second[key])
        for key in NUMERICS_KEYS
        if key in first and key in second and first[key] != second[key]
    }


def describe(differences: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {a} / {b}" for key, (a, b) in differences.items())


@dataclass(frozen=True)
class Pair:
    seed: str
    run: Job
    baseline: Job
    delta: float


@dataclass(frozen=True)
class Unpaired:
    """A finished run left out of the pairs, and why."""

    seed: str
    job: Job
    reason: str


@dataclass
class Comparison:
    """One configuration against its baseline on ``metric``; the Holm fields are set by
    ``resolve`` once every row of the table is known."""

    row: Row
    metric: str
    pairs: list[Pair]
    unpaired: list[Unpaired]
    noise: EvaluationNoise | None = None
    noise_note: str = ""
    p_sign_flip_holm: float | None = None
    p_t_holm: float | None = None
    level: float | None = None
    holm_interval: tuple[float, float] | None = None
    verdict: str = NOT_RESOLVED
    mde: float | None = None
    deltas: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.deltas = np.array([pair.delta for pair in self.pairs])

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def tested(self) -> bool:
        """Enough pairs for an interval and a test (two)."""
        return self.n >= 2

    @property
    def mean(self) -> float | None:
        return float(self.deltas.mean()) if self.n else None

    @cached_property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.deltas, CONFIDENCE) if self.tested else None

    @cached_property
    def p_sign_flip(self) -> float | None:
        return sign_flip_p_value(self.deltas) if self.n else None

    @cached_property
    def p_t(self) -> float | None:
        return paired_t_p_value(self.deltas) if self.tested else None

    @property
    def won(self) -> float | None:
        return float(np.mean(self.deltas > 0)) if self.n else None


def pair_runs(row: Row, metric: str) -> tuple[list[Pair], list[Unpaired]]:
    """Runs of ``row`` and of its baseline with the same seed in the same numerics environment
    (``NUMERICS_KEYS``); the rest, unpaired, with the reason."""
    unpaired: list[Unpaired] = []
    runs, baselines = (
        usable_by_seed(jobs, metric, unpaired) for jobs in (row.jobs, row.baseline.jobs)
    )
    pairs: list[Pair] = []
    partners: list[Job] = []
    for seed, jobs in runs.items():
        for job in jobs:
            candidates = baselines.get(seed, [])
            partner = next((b for b in candidates if not environment_differences(job, b)), None)
            if any(pair.seed == seed for pair in pairs):
                unpaired.append(Unpaired(seed, job, f"second run of seed {seed}"))
            elif partner is not None:
                delta = job.results["metrics"][metric] - partner.results["metrics"][metric]
                pairs.append(Pair(seed, job, partner, delta))
                partners.append(partner)
            else:
                unpaired.append(Unpaired(seed, job, unmatched_reason(job, candidates)))
    for seed, jobs in baselines.items():
        for job in jobs:
            if all(job is not partner for partner in partners):
                unpaired.append(Unpaired(seed, job, unmatched_reason(job, runs.get(seed, []))))
    return pairs, unpaired


def usable_by_seed(
    jobs: Sequence[Job], metric: str, unpaired: list[Unpaired]
) -> dict[str, list[Job]]:
    """The runs with ``metric`` by seed, at most one per seed and environment; the others are
    added to ``unpaired``."""
    by_seed: dict[str, list[Job]] = {}
    for job in jobs:
        seed = job.seed or "?"
        same_seed = by_seed.setdefault(seed, [])
        if metric not in job.results["metrics"]:
            unpaired.append(Unpaired(seed, job, f"no {metric}"))
        elif any(not environment_differences(job, other) for other in same_seed):
            unpaired.append(Unpaired(seed, job, f"second run of seed {seed}"))
        else:
            same_seed.append(job)
    return {seed: jobs for seed, jobs in by_seed.items() if jobs}


def unmatched_reason(job: Job, same_seed: Sequence[Job]) -> str:
    """Why ``job`` has no partner among the other side's runs of its seed."""
    if not same_seed:
        return "no run with this seed on the other side"
    differences = describe(environment_differences(job, same_seed[0]))
    return f"the other side ran this seed in another environment ({differences})"


class BootstrapCache:
    """Each run's bootstrap AP, computed once (a baseline serves several rows), on the same
    resampled image sets for every run of one split size."""

    def __init__(self, resamples: int, seed: int) -> None:
        self.resamples, self.seed = resamples, seed
        self.runs: dict[str, tuple[str, dict[str, np.ndarray]]] = {}

    def __call__(self, job: Job) -> tuple[str, dict[str, np.ndarray]]:
        """The run's validation digest and bootstrap metrics; raises ``ValueError`` (with the
        reason) when it left no usable per-image results."""
        key = str(job.folder)
        if key not in self.runs:
            path = job.folder / PER_IMAGE_FILE
            if not path.is_file():
                raise ValueError(f"no {PER_IMAGE_FILE} in {job.folder}")
            try:
                results = PerImageResults.load(path)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                raise ValueError(f"unreadable {path}: {error}") from error
            counts = resample_counts(results.num_images, self.resamples, self.seed)
            self.runs[key] = (results.ground_truth_digest, bootstrap_ap(results, counts))
        return self.runs[key]


def noise_of(
    pairs: Sequence[Pair], metric: str, bootstrap: BootstrapCache
) -> tuple[EvaluationNoise | None, str]:
    """The evaluation noise of the mean Δ over ``pairs``, or ``None`` and why not."""
    if metric not in BOOTSTRAP_METRICS:
        return None, f"no bootstrap for {metric} (only {', '.join(BOOTSTRAP_METRICS)})"
    if not pairs:
        return None, "no pairs"
    try:
        runs = [(bootstrap(pair.run), bootstrap(pair.baseline)) for pair in pairs]
    except ValueError as error:
        return None, str(error)
    if len({digest for run in runs for digest, _ in run}) > 1:
        return None, "the runs were validated on different images"
    return evaluation_noise([run[metric] - base[metric] for (_, run), (_, base) in runs]), ""


def resolve(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> None:
    """Holm across the rows with at least two pairs; verdicts, Holm intervals and MDE."""
    tested = [c for c in comparisons if c.tested]
    if not tested:
        return
    p_t = [c.p_t for c in tested]
    columns = zip(
        tested,
        holm(p_t),
        holm_levels(p_t, alpha),
        holm([c.p_sign_flip for c in tested]),
        strict=True,
    )
    for comparison, p_t_holm, level, p_sign_flip_holm in columns:
        comparison.p_t_holm, comparison.level = p_t_holm, level
        comparison.p_sign_flip_holm = p_sign_flip_holm
        comparison.holm_interval = t_interval(comparison.deltas, 1 - level)
        if p_t_holm <= alpha:
            comparison.verdict = BETTER if comparison.mean > 0 else WORSE
        else:
            spread = float(comparison.deltas.std(ddof=1))
            comparison.mde = minimum_detectable_effect(spread, comparison.n, level, TARGET_POWER)


def compare(
    table: Table,
    metric: str = "AP",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> list[Comparison]:
    """Every row with a baseline other than itself, against it, resolved across the table."""
    bootstrap = BootstrapCache(resamples, seed)
    comparisons = []
    for row in table.rows:
        if row.baseline is None or row.baseline is row:
            continue
        pairs, unpaired = pair_runs(row, metric)
        noise, note = noise_of(pairs, metric, bootstrap) if resamples else (None, "not asked")
        comparisons.append(Comparison(row, metric, pairs, unpaired, noise, note))
    resolve(comparisons)
    return comparisons

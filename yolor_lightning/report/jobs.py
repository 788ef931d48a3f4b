"""Find the job folders of one or more runs and read what each left behind.

A job folder is one Hydra output folder: it holds ``.hydra/`` (written when the job starts) and,
once the job has finished, ``results.json``. A job without usable results failed: no results.json,
one that cannot be read or parsed, one that records a failure (``"status": "failed"``), or one
without finite metrics (NaN, inf). Failed jobs are listed with the reason, never averaged: a
failed job of the baseline cannot stand in for its finished runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolor_lightning.results import RESULTS_FILE, read_results

HYDRA_FOLDER = ".hydra"
UNKNOWN_EXPERIMENT = "?"


class ReportError(ValueError):
    """Input the report cannot be made from; the message names the folder and what is wrong."""


def override_key(override: str) -> str:
    """The config key an override sets: ``+experiment=ifa_mul`` -> ``experiment``."""
    return override.split("=", 1)[0].lstrip("+~")


@dataclass(frozen=True)
class Job:
    """One job folder: its command-line overrides and its results, or why it has none."""

    folder: Path
    experiment: str
    overrides: tuple[str, ...]
    results: dict[str, Any] | None
    failure: str | None = None

    @property
    def seed(self) -> str | None:
        """As recorded in results.json, else as overridden (a failed job has only the latter)."""
        choices = self.results.get("choices") if self.results is not None else None
        if isinstance(choices, dict) and "seed" in choices:
            return str(choices["seed"])
        for override in self.overrides:
            if override_key(override) == "seed":
                return override.split("=", 1)[1]
        return None

    @property
    def configuration(self) -> tuple[str, tuple[str, ...]]:
        """What the seeds of one configuration share: the experiment and the other overrides."""
        return self.experiment, tuple(o for o in self.overrides if override_key(o) != "seed")


def natural_key(path: Path) -> list[int | str]:
    """Sort job ``10`` after job ``9``, as Hydra numbers them."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def job_folders(root: Path) -> list[Path]:
    markers = [*root.rglob(RESULTS_FILE), *root.rglob(HYDRA_FOLDER)]
    return sorted({marker.parent for marker in markers}, key=natural_key)


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def failure_of(results: Any) -> str | None:
    """Why the contents of a results.json are not a finished run's results, or ``None``.

    A run that failed says so (``"status": "failed"`` and a ``"failure"`` reason); any other
    results.json without finite metrics, or naming its run in a shape other than the one
    :func:`yolor_lightning.train.train` writes, counts as failed as well.
    """
    if not isinstance(results, dict):
        return f"{RESULTS_FILE} holds a {type(results).__name__}, not an object"
    if results.get("status") == "failed":
        return f"run failed: {results.get('failure') or 'no reason recorded'}"
    metrics = results.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return f"{RESULTS_FILE} has no metrics"
    bad = [name for name, value in metrics.items() if not is_finite_number(value)]
    if bad:
        return f"{RESULTS_FILE} has non-finite metrics: {', '.join(map(str, bad))}"
    overrides = results.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return f"{RESULTS_FILE}: overrides is not a list of strings"
    if not isinstance(results.get("experiment", ""), str):
        return f"{RESULTS_FILE}: experiment is not a string"
    return None


def load_results(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The results of a finished job, or ``None`` and why the job counts as failed."""
    if not path.is_file():
        return None, f"no {RESULTS_FILE}"
    try:
        results = read_results(path)
    except (OSError, ValueError) as error:  # JSON and UTF-8 decoding errors are ValueErrors
        return None, f"unreadable {RESULTS_FILE}: {error}"
    failure = failure_of(results)
    return (None, failure) if failure else (results, None)


def read_hydra(folder: Path) -> tuple[list[str], dict[str, Any], str | None]:
    """The job's overrides and config from ``.hydra/``; empty ones and why, when unusable."""
    try:
        overrides = read_yaml(folder / HYDRA_FOLDER / "overrides.yaml") or []
        config = read_yaml(folder / HYDRA_FOLDER / "config.yaml") or {}
    except (OSError, ValueError, yaml.YAMLError) as error:
        return [], {}, f"unreadable {HYDRA_FOLDER}/: {error}"
    shapes_ok = isinstance(overrides, list) and isinstance(config, dict)
    if not shapes_ok or not all(isinstance(o, str) for o in overrides):
        return [], {}, f"unreadable {HYDRA_FOLDER}/: not the overrides list and config Hydra writes"
    return overrides, config, None


def read_job(folder: Path) -> Job:
    """Read a job folder; results.json is the source, ``.hydra/`` fills in what it lacks.

    A job whose results.json names its experiment and overrides needs nothing from ``.hydra/``;
    otherwise an unreadable ``.hydra/`` makes it a failed job (it cannot be placed in a row).
    """
    results, failure = load_results(folder / RESULTS_FILE)
    if results is not None and {"experiment", "overrides"} <= results.keys():
        return Job(folder, results["experiment"], tuple(results["overrides"]), results)
    hydra_overrides, hydra_config, hydra_failure = read_hydra(folder)
    experiment = hydra_config.get("experiment_name")
    if not isinstance(experiment, str):
        selected = [o for o in hydra_overrides if override_key(o) == "experiment"]
        experiment = selected[-1].split("=", 1)[1] if selected else UNKNOWN_EXPERIMENT
    if results is None or hydra_failure:
        reasons = "; ".join(reason for reason in (failure, hydra_failure) if reason)
        return Job(folder, experiment, tuple(hydra_overrides), None, reasons)
    return Job(
        folder,
        results.get("experiment", experiment),
        tuple(results.get("overrides", hydra_overrides)),
        results,
    )


def find_jobs(folders: Iterable[Path]) -> list[Job]:
    """Every job under the given folders (each a multirun, a sweep, or a single run folder)."""
    seen: set[Path] = set()
    jobs = []
    for root in folders:
        root = Path(root)
        if not root.is_dir():
            raise ReportError(f"folder not found: {root}")
        found = job_folders(root)
        if not found:
            raise ReportError(
                f"no results under {root}: no {RESULTS_FILE} and no {HYDRA_FOLDER}/ job folder "
                "(give a run folder, e.g. multirun/<date>/<time>)"
            )
        for folder in found:
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                jobs.append(read_job(folder))
    return jobs

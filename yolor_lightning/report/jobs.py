"""Find the job folders of one or more runs and read what each left behind.

A job folder is one Hydra output folder: it holds ``.hydra/`` (written when the job starts) and,
once the job has finished, ``results.json``. A job with ``.hydra/`` but no usable metrics failed.
"""

from __future__ import annotations

import json
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
        if self.results is not None and "seed" in self.results.get("choices", {}):
            return str(self.results["choices"]["seed"])
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


def load_results(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The results of a finished job, or ``None`` and why the job counts as failed."""
    if not path.is_file():
        return None, f"no {RESULTS_FILE}"
    try:
        results = read_results(path)
    except json.JSONDecodeError as error:
        return None, f"unreadable {RESULTS_FILE}: {error}"
    if not results.get("metrics"):
        return None, f"{RESULTS_FILE} has no metrics"
    return results, None


def read_job(folder: Path) -> Job:
    """Read a job folder; results.json is the source, ``.hydra/`` fills in for failed jobs."""
    hydra_overrides = read_yaml(folder / HYDRA_FOLDER / "overrides.yaml") or []
    hydra_config = read_yaml(folder / HYDRA_FOLDER / "config.yaml") or {}
    experiment = hydra_config.get("experiment_name")
    if experiment is None:
        selected = [o for o in hydra_overrides if override_key(o) == "experiment"]
        experiment = selected[-1].split("=", 1)[1] if selected else UNKNOWN_EXPERIMENT
    results, failure = load_results(folder / RESULTS_FILE)
    if results is None:
        return Job(folder, experiment, tuple(hydra_overrides), None, failure)
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

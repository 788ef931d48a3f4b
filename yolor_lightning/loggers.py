"""Experiment loggers: W&B (offline unless the user opts in) and CSV.

A W&B run is one run folder: grouped by its sweep or experiment, named by its overrides, tagged
with its task and implicit-knowledge choices, with the resolved config (so the W&B UI can group
and filter by any key, e.g. ``model.implicit.fa.operator``). Its id is kept in the run folder, so
a job that comes back there (requeued, resumed) continues the same W&B run.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import wandb
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig

log = logging.getLogger(__name__)

RUN_ID_FILE = Path("wandb") / "run-id"
# How long an online run waits to hear from the W&B server before it logs offline instead (W&B
# itself would retry for about 100 s, then fail the run).
WANDB_PROBE_SECONDS = 5.0
WANDB_DEFAULT_URL = "https://api.wandb.ai"


def wandb_mode(configured: str | None) -> str:
    """``logger.wandb.mode`` if set, else ``WANDB_MODE``, else online only with an API key.

    Offline is the default so that a run never waits on a network it cannot reach.
    """
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def offline_unless_reachable(mode: str) -> str:
    """``mode``, but ``offline``, with one warning, when it is ``online`` and the W&B server
    does not answer within :data:`WANDB_PROBE_SECONDS`."""
    url = os.environ.get("WANDB_BASE_URL") or WANDB_DEFAULT_URL
    if mode == "online" and not server_answers(url, WANDB_PROBE_SECONDS):
        log.warning(
            "W&B server %s did not answer within %.0f s: logging this run offline instead "
            "(upload it later with `wandb sync <run folder>/wandb/offline-run-*`)",
            url,
            WANDB_PROBE_SECONDS,
        )
        return "offline"
    return mode


def server_answers(url: str, timeout: float) -> bool:
    """Whether ``url`` answers an HTTP request (any status) within ``timeout`` seconds, name
    lookup included (run in a thread: ``urlopen``'s timeout does not bound DNS); proxies as
    ``urllib`` reads them from the environment."""
    answered = threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
        except urllib.error.HTTPError:  # an error status is an answer
            pass
        except (OSError, ValueError):
            return
        answered.set()

    threading.Thread(target=probe, daemon=True).start()
    return answered.wait(timeout)


def run_tags(task: str, sites: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``task:<name>``, and per enabled implicit site its ``site:``, ``operator:`` and ``prior:``
    tags and the cell itself (``fa:add:vector``); ``implicit:none`` without implicit knowledge.

    ``sites`` as in results.json's ``choices.sites``: ``{"fa": {"operator": "add", ...}}``.
    """
    tags = [f"task:{task}"]
    for site, choice in sites.items():
        operator, prior = choice["operator"], choice["prior"]
        tags += [f"site:{site}", f"operator:{operator}", f"prior:{prior}"]
        tags.append(f"{site}:{operator}:{prior}")
    if not sites:
        tags.append("implicit:none")
    return list(dict.fromkeys(tags))


def wandb_run_id(output_dir: Path) -> str:
    """The W&B run id of a run folder: the one kept there, else a new one, kept there.

    Every process of a distributed run asks; the first to write wins (a hard link never replaces
    a file) and all of them return what the folder holds.
    """
    path = output_dir / RUN_ID_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{path.name}.{os.getpid()}")
        candidate.write_text(uuid.uuid4().hex[:12] + "\n")
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing ``metrics.csv`` (its columns carried
    over) where Lightning's deletes it: a resumed run continues its history."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class HistoryCSVLogger(CSVLogger):
    """A ``CSVLogger`` whose ``metrics.csv`` keeps the rows of earlier attempts of the run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(
    settings: DictConfig,
    output_dir: Path,
    run_name: str,
    group: str,
    config: dict[str, Any],
    tags: Sequence[str] = (),
    job_type: str = "train",
) -> list[Logger]:
    """CSV and W&B loggers as ``settings`` (``cfg.logger``) asks; ``job_type``: train or eval."""
    loggers: list[Logger] = []
    if settings.csv:
        # every row on disk as it is logged: a killed run loses none of its history
        loggers.append(
            HistoryCSVLogger(
                save_dir=output_dir, name="csv", version="", flush_logs_every_n_steps=1
            )
        )
    if settings.wandb is not None:
        settings = settings.wandb
        loggers.append(
            WandbLogger(
                project=settings.project,
                entity=settings.entity,
                name=run_name,
                group=group,
                tags=list(dict.fromkeys([*settings.tags, *tags])),
                job_type=job_type,
                save_dir=str(output_dir),
                mode=offline_unless_reachable(wandb_mode(settings.mode)),
                id=wandb_run_id(output_dir),
                config=config,
            )
        )
    return loggers


def finish_wandb(loggers: Sequence[Logger], summary: Mapping[str, Any]) -> None:
    """Put ``summary`` in the W&B run summary and close the run (rank zero only)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(summary))
            logger.experiment.finish()


@contextmanager
def no_wandb_run_left_open() -> Iterator[None]:
    """Close a W&B run that a failed job left open, so that the next job of a sweep run by the
    same process gets a run of its own (``WandbLogger`` joins a run in progress)."""
    try:
        yield
    except BaseException:
        if wandb.run is not None:
            wandb.finish(exit_code=1)
        raise

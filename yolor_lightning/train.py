"""Training entry point: compose the config, train, evaluate the best checkpoint, write results."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning import LightningDataModule
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from yolor_lightning.analysis.complexity import model_cost
from yolor_lightning.callbacks import (
    AtomicCheckpointIO,
    EvaluationThreads,
    RampedEMA,
    ValidationMedia,
)
from yolor_lightning.checkpoints import load_checkpoint
from yolor_lightning.cluster import cluster_environment, distributed_job, resume_from
from yolor_lightning.config import check_values, plain, register_schemas
from yolor_lightning.environment import (
    automatic_precision,
    compute_threads,
    compute_threads_set,
    evaluation_compute_threads,
    numerics_environment,
)
from yolor_lightning.heap import freed_memory_kept, keep_freed_memory
from yolor_lightning.loggers import (
    build_loggers,
    finish_wandb,
    no_wandb_run_left_open,
    run_tags,
)
from yolor_lightning.results import implicit_choices, write_results
from yolor_lightning.run_folder import claim_run_folder, global_rank
from yolor_lightning.run_summary import run_summary
from yolor_lightning.tasks.finite import NonFiniteError
from yolor_lightning.tasks.per_image import PER_IMAGE_FILE
from yolor_lightning.tasks.unified import UnifiedModule

register_schemas()

log = logging.getLogger(__name__)

PROGRESS_BARS = {"rich": RichProgressBar, "tqdm": TQDMProgressBar}
EVALUATED_WEIGHTS = ("best", "last")
"""What ``callbacks.checkpoint.evaluate`` may choose (see :func:`evaluated_checkpoint`)."""
RUN_OPTIONS = ("threads", "compile", "keep_freed_memory")
"""Keys of ``cfg.trainer`` that the run applies itself, not Lightning's Trainer."""
CHECKPOINTS = "checkpoints"
MEDIA = "media"


def build_module(cfg: DictConfig, datamodule: LightningDataModule | None = None) -> UnifiedModule:
    """The configured LightningModule; identity cross-entropy (``task.emb.loss=id_ce``) sizes
    its classifier from ``datamodule``'s training identities."""
    task = plain(cfg.task)
    needs_identities = "emb" in task["targets"] and task["emb"]["loss"] == "id_ce"
    if needs_identities and datamodule is None:
        raise ValueError("task.emb.loss=id_ce: build_module needs the DataModule")
    return UnifiedModule(
        model=plain(cfg.model),
        optimizer=task["optimizer"],
        schedule=task["schedule"],
        loss=task["loss"],
        evaluation=task["evaluation"],
        batch_size=cfg.data.batch_size,
        channels_last=task["channels_last"],
        cls=task["cls"],
        emb=task["emb"],
        weighting=task["weighting"],
        num_identities=datamodule.num_identities if needs_identities else None,
        seed=cfg.seed,
    )


def build_datamodule(cfg: DictConfig) -> LightningDataModule:
    """The configured DataModule, serving the targets of the configured task in the order and
    with the augmentations drawn from the run's seed."""
    return instantiate(cfg.data, targets=list(cfg.task.targets), seed=cfg.seed, _convert_="all")


def build_callbacks(
    settings: DictConfig, output_dir: Path, evaluation_threads: int | None = None
) -> tuple[list[Callback], ModelCheckpoint]:
    """The recipe's callbacks, and the one that keeps the best checkpoint; validation on
    ``evaluation_threads`` torch threads where given (:func:`process_settings`).

    ``last.ckpt`` has its own checkpoint callback, saved every epoch: Lightning's ``save_last``
    only refreshes it when the monitored metric improves, which would resume a run from its best
    epoch instead of its latest.
    """
    evaluate = settings.checkpoint.evaluate
    if evaluate not in EVALUATED_WEIGHTS:
        raise ValueError(
            f"config key callbacks.checkpoint.evaluate={evaluate!r} is unknown: allowed values "
            f"are {list(EVALUATED_WEIGHTS)}"
        )
    if evaluate == "last" and not settings.checkpoint.save_last:
        raise ValueError(
            "callbacks.checkpoint.evaluate=last needs callbacks.checkpoint.save_last=true"
        )
    folder = output_dir / CHECKPOINTS
    checkpoint = ModelCheckpoint(
        dirpath=folder,
        filename="best",
        monitor=settings.checkpoint.monitor,
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [checkpoint, LearningRateMonitor(logging_interval="step")]
    if settings.checkpoint.save_last:
        callbacks.append(
            ModelCheckpoint(
                dirpath=folder,
                filename=ModelCheckpoint.CHECKPOINT_NAME_LAST,
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    if settings.ema.enabled:
        callbacks.append(RampedEMA(decay=settings.ema.decay, ramp_steps=settings.ema.ramp_steps))
    if settings.media:
        callbacks.append(ValidationMedia(output_dir / MEDIA, **settings.media))
    if evaluation_threads is not None:
        callbacks.append(EvaluationThreads(evaluation_threads))
    if settings.progress_bar:
        if settings.progress_bar not in PROGRESS_BARS:
            raise ValueError(
                f"config key callbacks.progress_bar={settings.progress_bar!r} is unknown: "
                f"allowed values are {sorted(PROGRESS_BARS)} or null"
            )
        callbacks.append(PROGRESS_BARS[settings.progress_bar]())
    return callbacks, checkpoint


def trainer_arguments(settings: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` as Trainer keyword arguments, with ``precision: auto`` resolved and the
    keys that are not Trainer arguments (:data:`RUN_OPTIONS`) left out."""
    arguments = plain(settings)
    for key in RUN_OPTIONS:
        arguments.pop(key, None)
    if arguments["precision"] == "auto":
        arguments["precision"] = automatic_precision()
    return arguments


def last_checkpoint(output_dir: Path) -> Path:
    """Where a run folder keeps the checkpoint of its latest epoch."""
    name = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION
    return output_dir / CHECKPOINTS / name


def build_trainer(
    cfg: DictConfig, output_dir: Path, loggers: list[Logger], callbacks: list[Callback]
) -> L.Trainer:
    """A Trainer as ``cfg.trainer`` says, writing into the run folder, in the job's cluster
    environment (see :mod:`yolor_lightning.cluster`); it saves checkpoints only through the
    given checkpoint callbacks (none: no default one)."""
    environment = cluster_environment()
    return L.Trainer(
        **trainer_arguments(cfg.trainer),
        default_root_dir=output_dir,
        logger=loggers,
        callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        plugins=[AtomicCheckpointIO(), *([environment] if environment else [])],
    )


def run_overrides() -> list[str]:
    """The command-line overrides of this run (its name on W&B), empty outside a Hydra app."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_loggers(cfg: DictConfig, output_dir: Path, job_type: str) -> list[Logger]:
    """The loggers of a train or eval run: on W&B grouped by its sweep (else its experiment),
    named by its overrides, tagged with its task and implicit-knowledge choices."""
    sites = implicit_choices(plain(cfg.model.implicit))["sites"]
    return build_loggers(
        cfg.logger,
        output_dir,
        run_name=",".join(run_overrides()) or cfg.experiment_name,
        group=cfg.sweep_name or cfg.experiment_name,
        config=plain(cfg),
        tags=run_tags(cfg.task.name, sites),
        job_type=job_type,
    )


def run_record(cfg: DictConfig, evaluation_threads: int | None = None) -> dict[str, Any]:
    """What results.json says of every run, finished or failed: its configuration and the
    environment that decides its numerics."""
    return {
        "experiment": cfg.experiment_name,
        "overrides": run_overrides(),
        "choices": {
            "model": cfg.model.name,
            "size": cfg.model.size,
            "task": cfg.task.name,
            "data": cfg.data.name,
            "seed": cfg.seed,
            **implicit_choices(plain(cfg.model.implicit)),
        },
        "environment": {
            **numerics_environment(cfg.data.num_workers, evaluation_threads),
            "malloc_keeps_freed_memory": freed_memory_kept(),
        },
        "config": plain(cfg),
    }


@contextlib.contextmanager
def process_settings(cfg: DictConfig) -> Iterator[int | None]:
    """The process-wide settings a run takes from ``cfg.trainer``: torch's threads for training
    as ``threads`` says, inside the block (:func:`compute_threads_set`), and glibc's heap reuse
    where ``keep_freed_memory`` is on (:func:`keep_freed_memory`: for the rest of the process,
    since it cannot be undone). Yields the threads the evaluation loops take
    (:class:`EvaluationThreads`; ``None``: torch's default)."""
    if cfg.trainer.keep_freed_memory:
        keep_freed_memory()
    trainer = plain(cfg.trainer)
    threads = compute_threads(trainer, cfg.data.num_workers)
    evaluation = evaluation_compute_threads(trainer, threads)
    with compute_threads_set(threads) if threads is not None else contextlib.nullcontext():
        yield evaluation


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate as configured; return (and write) the contents of results.json.

    The run first claims its folder (:mod:`yolor_lightning.run_folder`). A run that fails after
    that writes results.json with ``status: failed`` and the reason, then raises.
    """
    check_values(cfg)
    with process_settings(cfg) as evaluation:
        output_dir = Path(cfg.output_dir)
        resume = resume_from(cfg.ckpt_path, last_checkpoint(output_dir))
        if global_rank() == 0:
            claim_run_folder(output_dir, resuming=resume is not None)
        try:
            return train_and_evaluate(cfg, output_dir, resume, evaluation)
        except Exception as error:
            if global_rank() == 0:
                failure = f"{type(error).__name__}: {error}"
                record = run_record(cfg, evaluation)
                write_results(output_dir, {**record, "status": "failed", "failure": failure})
            raise


def evaluated_checkpoint(
    settings: DictConfig, best: ModelCheckpoint, output_dir: Path
) -> str | None:
    """The checkpoint whose metrics results.json reports (``callbacks.checkpoint.evaluate``):
    ``best``, the best validated epoch's, or ``last``, the final EMA weights (the best of several
    noisy validations is biased upwards: a winner's curse that ``last`` does not have)."""
    if settings.checkpoint.evaluate == "best":
        return best.best_model_path or None
    last = last_checkpoint(output_dir)
    return str(last) if last.is_file() else None


def checkpoint_metrics(
    trainer: L.Trainer, module: UnifiedModule, datamodule: LightningDataModule, path: str | None
) -> dict[str, float]:
    """The validation metrics of the checkpoint ``path``, after ``trainer.fit``.

    When it holds the weights of the fit's last step, the fit's last validation measured
    exactly these weights (the EMA weights the module holds after fit): its metrics are returned
    and the module's evaluator keeps that validation's per-image results. Otherwise (weights
    moved since, no validation in this fit, no checkpoint) it is validated once more on the
    whole validation split.
    """
    validated = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if validated and path and load_checkpoint(path)["global_step"] == trainer.global_step:
        return validated
    (final,) = trainer.validate(module, datamodule=datamodule, ckpt_path=path, verbose=False)
    return final


def train_and_evaluate(
    cfg: DictConfig, output_dir: Path, resume: str | None, evaluation_threads: int | None = None
) -> dict[str, Any]:
    """:func:`train` in its claimed folder, from the checkpoint ``resume`` when given; its
    validations on ``evaluation_threads`` torch threads (``None``: those of training)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    if cfg.trainer.compile:  # in place: the module, its state_dict keys and the EMA's stay plain
        module.network.compile(backend="inductor")
    callbacks, checkpoint = build_callbacks(cfg.callbacks, output_dir, evaluation_threads)
    loggers = run_loggers(cfg, output_dir, job_type="train")
    trainer = build_trainer(cfg, output_dir, loggers, callbacks)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    fit_seconds = time.perf_counter() - started
    best = checkpoint.best_model_path or None
    evaluated = evaluated_checkpoint(cfg.callbacks, checkpoint, output_dir)
    final = checkpoint_metrics(trainer, module, datamodule, evaluated)

    metrics = {key.removeprefix("val/"): float(value) for key, value in final.items()}
    unmeasured = [name for name, value in metrics.items() if not math.isfinite(value)]
    if unmeasured:
        raise NonFiniteError(f"the final validation measured no finite {', '.join(unmeasured)}")
    results = {
        **run_record(cfg, evaluation_threads),
        "status": "finished",
        "metrics": metrics,
        "model": {
            **model_cost(module.network, cfg.data.image_size),
            "image_size": cfg.data.image_size,
        },
        "data": {"skipped": datamodule.skipped},
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "precision": trainer.precision,
        "fit_seconds": round(fit_seconds, 1),
        "best_checkpoint": best,
        "evaluated_checkpoint": evaluated,
    }
    if any(datamodule.num_skipped.values()):
        log.warning("data.skip_bad skipped (split: {reason: count}): %s", datamodule.skipped)
    if trainer.is_global_zero:
        if "det" in module.tasks:
            module.evaluator.per_image_results().save(output_dir / PER_IMAGE_FILE)
        write_results(output_dir, results)
        finish_wandb(
            loggers,
            {f"final/{k}": v for k, v in results["metrics"].items()}
            | {f"model/{k}": v for k, v in results["model"].items()},
        )
    return results


@hydra.main(version_base="1.3", config_path="pkg://yolor_lightning.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra app; returns the task's monitored validation metric so sweepers can optimise it."""
    with distributed_job(), no_wandb_run_left_open():
        results = train(cfg)
        summarise = global_rank() == 0
    if summarise:
        output_dir = Path(cfg.output_dir)
        print(run_summary(results, output_dir, output_dir / MEDIA), flush=True)
    return results["metrics"][cfg.task.monitor.removeprefix("val/")]

"""Where one validation of the default run spends its time, and its two levers measured in turns.

    python benchmarks/validation_parts.py CHECKPOINT [--turns 3] [overrides ...]

On a trained checkpoint's weights (this project's checkpoints hold the EMA weights) and the
default run's validation split, with the run's evaluation threads, precision and heap setting:

- the parts of one validation, timed batch by batch as ``validation_step`` runs them: waiting
  for the loader, the forward of the inference form, the validation loss, decoding and NMS, the
  evaluator's update, then ``CocoEvaluator.compute``; where the split's batches are replayed
  from memory (``data.val_cache_mb``), the first validation, started as soon as the split is
  handed out so that it waits for the background loading, and a later one;
- the forward of the network in eval mode against its inference form
  (``models.fusion.inference_form``), in turns over the same batches, with the largest output
  difference;
- ``CocoEvaluator.compute`` against torchmetrics' ``MeanAveragePrecision`` (faster_coco_eval
  backend, the same COCO thresholds) on the same detections, in turns, with both APs and
  whether all 12 stats agree at float32 (torchmetrics rounds them to it).

Writes benchmarks/results/validation_parts.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from records import add_output_option, invocation, write_record
from step_timing import autocast, precision_of, timed, timed_in_turns
from torchmetrics.detection import MeanAveragePrecision

from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.data.replay import ReplayedBatches
from yolor_lightning.environment import cpu_model
from yolor_lightning.heap import freed_memory_kept
from yolor_lightning.models.fusion import inference_form
from yolor_lightning.tasks.evaluation import (
    COCO_STAT_NAMES,
    TORCHMETRICS_STAT_KEYS,
    CocoEvaluator,
)
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import build_datamodule, process_settings


def timed_batches(loader: torch.utils.data.DataLoader) -> Iterator[tuple[float, dict]]:
    """Each batch with the seconds spent waiting for it."""
    batches = iter(loader)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        yield time.perf_counter() - started, batch


def validation_parts(
    module: UnifiedModule, loader: torch.utils.data.DataLoader, precision: str
) -> tuple[dict[str, Any], list[tuple[dict, list[dict], list[dict]]]]:
    """Seconds of each part of one validation, and per batch (batch, detections, ground truth)."""
    seconds = dict.fromkeys(("loader", "inference form", "loss", "decode and NMS", "update"), 0.0)
    evaluator = CocoEvaluator()
    kept = []

    def timed_part(part: str, action: Callable[..., Any], *arguments: Any) -> Any:
        started = time.perf_counter()
        result = action(*arguments)
        seconds[part] += time.perf_counter() - started
        return result

    started = time.perf_counter()
    form = inference_form(module.network)
    seconds["building the inference form"] = time.perf_counter() - started

    def forward(images: torch.Tensor) -> dict[str, Any]:
        with autocast(precision):
            return form(module.network_input(images))

    for waited, batch in timed_batches(loader):
        seconds["loader"] += waited
        outputs = timed_part("inference form", forward, batch["images"])
        timed_part("loss", module.task_losses, outputs, batch)
        detections, ground_truth = timed_part(
            "decode and NMS", module.detections_and_ground_truth, outputs["det"], batch["meta"]
        )
        timed_part("update", evaluator.update, detections, ground_truth)
        kept.append((batch, detections, ground_truth))
    started = time.perf_counter()
    stats = evaluator.compute()
    seconds["COCO compute"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return {"seconds": {k: round(v, 2) for k, v in seconds.items()}, "AP": stats["AP"]}, kept


def forward_comparison(
    module: UnifiedModule, batches: list[dict], precision: str, turns: int
) -> dict[str, Any]:
    """The eval-mode network against its inference form over the same batches, in turns."""
    inputs = [module.network_input(batch["images"]) for batch in batches]
    form = inference_form(module.network)

    def forward(network: torch.nn.Module) -> list[dict]:
        with autocast(precision):
            return [network(images) for images in inputs]

    largest = max(
        (plain.float() - folded.float()).abs().max().item()
        for first, second in zip(forward(module.network), forward(form), strict=True)
        for plain, folded in zip(first["det"], second["det"], strict=True)
    )
    timing = timed_in_turns(
        {
            "network": lambda: timed(lambda: forward(module.network)),
            "inference form": lambda: timed(lambda: forward(form)),
        },
        turns,
    )
    return {**timing, "largest_output_difference": largest}


def coco_comparison(kept: list[tuple[dict, list[dict], list[dict]]], turns: int) -> dict[str, Any]:
    """CocoEvaluator.compute against torchmetrics' on the same detections (and the same COCO
    thresholds), in turns."""
    detections = [d for _, batch_detections, _ in kept for d in batch_detections]
    ground_truth = [g for _, _, batch_truth in kept for g in batch_truth]
    thresholds = CocoEvaluator()
    stats: dict[str, dict[str, float]] = {}

    def torchmetrics_compute() -> None:
        metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_thresholds=thresholds.iou_thresholds,
            rec_thresholds=thresholds.rec_thresholds,
            backend="faster_coco_eval",
        )
        metric.warn_on_many_detections = False
        metric.update(detections, ground_truth)
        computed = metric.compute()
        stats["torchmetrics"] = {
            name: float(computed[key])
            for name, key in zip(COCO_STAT_NAMES, TORCHMETRICS_STAT_KEYS, strict=True)
        }

    def evaluator_compute() -> None:
        evaluator = CocoEvaluator()
        evaluator.update(detections, ground_truth)
        stats["CocoEvaluator"] = evaluator.compute()

    timing = timed_in_turns(
        {
            "torchmetrics": lambda: timed(torchmetrics_compute),
            "CocoEvaluator": lambda: timed(evaluator_compute),
        },
        turns,
    )
    # torchmetrics rounds COCOeval's float64 stats to float32
    rounded = {name: torch.tensor(v).float().item() for name, v in stats["CocoEvaluator"].items()}
    return {
        **timing,
        "detections_per_image": round(sum(len(d["scores"]) for d in detections) / len(detections)),
        "AP": {name: round(values["AP"], 5) for name, values in stats.items()},
        "all_12_stats_equal_at_float32": rounded == stats["torchmetrics"],
    }


def measure(cfg: DictConfig, checkpoint: Path, turns: int) -> dict[str, Any]:
    """The record of validation_parts.json, on torch's current thread count."""
    precision = precision_of(cfg)
    datamodule = build_datamodule(cfg)
    module = module_from_checkpoint(load_checkpoint(checkpoint)).eval()
    record: dict[str, Any] = {
        "command": invocation(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "data_workers": cfg.data.num_workers,
        "malloc_keeps_freed_memory": freed_memory_kept(),
    }
    loader = datamodule.val_dataloader()
    with torch.inference_mode():
        record["first validation"], kept = validation_parts(module, loader, precision)
        if isinstance(loader, ReplayedBatches):  # every later validation replays the batches
            record["one validation"], kept = validation_parts(module, loader, precision)
        else:
            record["one validation"] = record.pop("first validation")
        record["images"] = sum(len(batch["meta"]) for batch, _, _ in kept)
        record["forward"] = forward_comparison(
            module, [batch for batch, _, _ in kept], precision, turns
        )
    record["COCO compute"] = coco_comparison(kept, turns)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "validation_parts.json")
    arguments = parser.parse_intermixed_args()
    cfg = compose_config(arguments.overrides)
    with process_settings(cfg) as evaluation_threads:
        if evaluation_threads is not None:
            torch.set_num_threads(evaluation_threads)
        record = measure(cfg, arguments.checkpoint, arguments.turns)
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

"""The NMS candidate cap (``task.evaluation.max_candidates``), measured: for each checkpoint and
cap, the postprocessing time over the validation split and all 12 COCO stats.

    python benchmarks/nms_cap.py NAME=CHECKPOINT [NAME=CHECKPOINT ...] [--caps 30000 3000]
        [--overrides data.shapes.num_val=300 ...]

The network runs once per checkpoint (its EMA weights and its own hyper-parameters); each cap
then postprocesses the same outputs: decode, score threshold, NMS (``tasks/postprocess.py``) and
the mapping to original pixels, timed, then the COCO evaluation of the detections. The
validation split is the default run's (shapes, 300 images) unless ``--overrides`` say otherwise.
Writes benchmarks/results/nms_cap.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from records import add_output_option, invocation, write_record
from torch import Tensor

from yolor_lightning.checkpoints import load_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.tasks.evaluation import CocoEvaluator
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import build_datamodule

CAPS = (30000, 10000, 3000, 1000)


@torch.no_grad()
def network_outputs(
    module: UnifiedModule, loader: torch.utils.data.DataLoader
) -> list[tuple[list[Tensor], list[dict[str, Any]]]]:
    """The raw detection outputs and image metadata of every validation batch."""
    module.eval()
    return [(module(batch["images"])["det"], batch["meta"]) for batch in loader]


def measure_cap(
    module: UnifiedModule, outputs: list[tuple[list[Tensor], list[dict[str, Any]]]], cap: int
) -> dict[str, Any]:
    """Postprocessing seconds (whole split) and the COCO stats with at most ``cap`` candidates."""
    module.hparams.evaluation["max_candidates"] = cap
    evaluator = CocoEvaluator()
    seconds = 0.0
    for raw, meta in outputs:
        started = time.perf_counter()
        detections, ground_truth = module.detections_and_ground_truth(raw, meta)
        seconds += time.perf_counter() - started
        evaluator.update(detections, ground_truth)
    images = sum(len(meta) for _, meta in outputs)
    return {
        "cap": cap,
        "postprocess_seconds": round(seconds, 3),
        "ms_per_image": round(1000 * seconds / images, 2),
        "stats": {name: round(value, 5) for name, value in evaluator.compute().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="NAME=PATH of each checkpoint to measure")
    parser.add_argument("--caps", nargs="+", type=int, default=list(CAPS))
    parser.add_argument("--overrides", nargs="*", default=["data.num_workers=0"])
    add_output_option(parser, "nms_cap.json")
    arguments = parser.parse_args()
    datamodule = build_datamodule(compose_config(arguments.overrides))
    datamodule.prepare_data()
    datamodule.setup("validate")
    record: dict[str, Any] = {
        "command": invocation(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "checkpoints": {},
    }
    for name, path in (item.split("=", 1) for item in arguments.checkpoints):
        checkpoint = load_checkpoint(path)
        module = UnifiedModule(**checkpoint["hyper_parameters"])
        module.load_state_dict(checkpoint["state_dict"])
        outputs = network_outputs(module, datamodule.val_dataloader())
        record["checkpoints"][name] = {
            "path": path,
            "global_step": checkpoint["global_step"],
            "images": sum(len(meta) for _, meta in outputs),
            "caps": [measure_cap(module, outputs, cap) for cap in arguments.caps],
        }
    write_record(arguments.output, record)


if __name__ == "__main__":
    main()

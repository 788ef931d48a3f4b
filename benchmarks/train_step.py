"""Training-step time of a model size on the CPU: float32 against bfloat16 autocast, and NCHW
against channels_last, timed in turns within one process.

    python benchmarks/train_step.py [--model yolov4_csp] [--size tiny] [--image-size 256]
        [--batch-size 16] [--steps 3] [--rounds 3]

The network is the config's (`conf/model/<model>.yaml` at `--size`) with the anchor head.

Times forward + loss (float32, as the run computes it) + backward + foreach SGD step on random
images with a fixed set of boxes, for each variant in turns, and writes images/s and the median
step time's ratio to float32 channels_last (the fp32 default) to
benchmarks/results/train_step_<model>_<size>.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from records import RESULTS, invocation, write_record
from step_timing import autocast, timed, timed_in_turns

from yolor_lightning.config import compose_config, plain
from yolor_lightning.environment import usable_cores
from yolor_lightning.models import build_network
from yolor_lightning.tasks.loss import YoloLoss

VARIANTS = {  # name: (precision, channels_last); the first is the reference
    "fp32_channels_last": ("32-true", True),
    "fp32_nchw": ("32-true", False),
    "bf16_channels_last": ("bf16-mixed", True),
}


def step_timer(
    model: str, size: str, image_size: int, batch_size: int, variant: tuple[str, bool], steps: int
) -> Callable[[], float]:
    """A function timing ``steps`` training steps of a fresh network, after one warm-up step."""
    precision, channels_last = variant
    torch.manual_seed(0)
    cfg = compose_config([f"model={model}", f"model.size={size}", "model.head=anchor"])
    network = build_network(plain(cfg.model))
    images = torch.rand(batch_size, 3, image_size, image_size)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    head = network.heads["det"]
    loss_fn = YoloLoss(head.anchors, head.strides, num_classes=head.num_classes)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=0.01, momentum=0.9, nesterov=True, foreach=True
    )
    boxes = torch.tensor([[10.0, 20.0, 60.0, 90.0], [100.0, 100.0, 150.0, 180.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])}] * batch_size

    def step() -> None:
        with autocast(precision):
            outputs = network(images)["det"]
        total, _ = loss_fn([level.float() for level in outputs], targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()

    step()

    def run() -> float:
        def steps_in_turn() -> None:
            for _ in range(steps):
                step()

        return timed(steps_in_turn) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov4_csp")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="the JSON record to write (default: benchmarks/results/train_step_MODEL_SIZE.json)",
    )
    args = parser.parse_args()
    timers = {
        name: step_timer(
            args.model, args.size, args.image_size, args.batch_size, variant, args.steps
        )
        for name, variant in VARIANTS.items()
    }
    turns = timed_in_turns(timers, args.rounds)
    for timing in turns["variants"].values():
        timing["images_per_s"] = round(args.batch_size / timing["median_seconds"], 1)
    result = {
        "command": invocation(),
        "model": args.model,
        "size": args.size,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "usable_cores": usable_cores(),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "time_ratio": "median step time over fp32 channels_last's",
        **turns,
    }
    write_record(args.output or RESULTS / f"train_step_{args.model}_{args.size}.json", result)


if __name__ == "__main__":
    main()

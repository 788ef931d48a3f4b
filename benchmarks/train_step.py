"""Training-step throughput of a model size on the CPU: NCHW against channels_last.

    python benchmarks/train_step.py [--model yolov4_csp] [--size tiny] [--image-size 256]
        [--batch-size 16]

The network is the config's (`conf/model/<model>.yaml` at `--size`) with the anchor head.

Times forward + loss + backward + SGD step on random images with a fixed set of boxes and writes
images/s per memory format to benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from yolor_lightning.config import compose_config, plain
from yolor_lightning.models import build_network
from yolor_lightning.tasks.loss import YoloLoss

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def images_per_second(
    model: str, size: str, image_size: int, batch_size: int, channels_last: bool, steps: int
) -> float:
    torch.manual_seed(0)
    cfg = compose_config([f"model={model}", f"model.size={size}", "model.head=anchor"])
    network = build_network(plain(cfg.model))
    images = torch.rand(batch_size, 3, image_size, image_size)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    head = network.heads["det"]
    loss_fn = YoloLoss(head.anchors, head.strides, num_classes=head.num_classes)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    boxes = torch.tensor([[10.0, 20.0, 60.0, 90.0], [100.0, 100.0, 150.0, 180.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])}] * batch_size
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            started = time.perf_counter()
        total, _ = loss_fn(network(images)["det"], targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov4_csp")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    result = {
        "model": args.model,
        "size": args.size,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    for name, channels_last in (("nchw", False), ("channels_last", True)):
        rate = images_per_second(
            args.model, args.size, args.image_size, args.batch_size, channels_last, args.steps
        )
        result[f"{name}_images_per_s"] = round(rate, 1)
        print(f"{name}: {rate:.1f} images/s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

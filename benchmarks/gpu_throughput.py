"""Training throughput and model FLOP utilisation (MFU) of the full-size model on a GPU.

    python benchmarks/gpu_throughput.py [--precision bf16-mixed] [--batch-size 64]
        [--image-size 640] [--steps 20] [--compile] [--peak-tflops T] [overrides ...]

YOLOR-CSP (``+experiment=yolor_csp model.size=full``, 80 classes) at 640 with the COCO
recipe's batch of 64 (``recipe=coco``): the real training step (forward, float32 loss and
target assignment, backward, foreach SGD) on random images with 7 random boxes each (COCO's
mean), timed after warm-up steps. MFU is the achieved FLOP/s (3x the forward FLOPs per
image, for forward and backward, times images/s) over the device's dense bfloat16 (or, for
32-true, TF32) tensor peak, looked up by device name or given with ``--peak-tflops``. Writes
benchmarks/results/gpu_throughput.json (or ``--output``). Without a CUDA GPU it says so and
exits; ``--device cpu`` runs the same code on the CPU as a smoke test (printed, not written, no
MFU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

import torch
from records import add_output_option, invocation, write_record
from step_timing import default_module, train_step

from yolor_lightning.analysis.complexity import count_gflops

MODEL = [
    "data=coco",
    "data.root=unused",
    "recipe=coco",
    "+experiment=yolor_csp",
    "model.size=full",
]
OBJECTS_PER_IMAGE = 7
WARM_UP_STEPS = 5
PEAK_TFLOPS = {  # dense tensor-core peaks (bf16, tf32), from the vendors' data sheets
    "H200": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100 NVL": (835.0, 418.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
}
"""Device-name fragments (first match wins: ``H100 PCIe`` before ``H100``, ``L40S`` before ``L4``,
``A100`` before ``A10``) to (bfloat16, TF32) dense TFLOP/s."""


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's dense tensor peak for ``precision``, when the table knows the device."""
    for fragment, (bf16, tf32) in PEAK_TFLOPS.items():
        if fragment in device_name:
            return bf16 if precision == "bf16-mixed" else tf32
    return None


def random_batch(
    batch_size: int, image_size: int, num_classes: int, device: torch.device
) -> dict[str, Any]:
    """Random images with ``OBJECTS_PER_IMAGE`` random boxes each, on ``device``."""
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(batch_size, OBJECTS_PER_IMAGE, 2, 2, generator=generator) * image_size
    boxes = torch.cat([corners.amin(2), corners.amax(2) + 8], dim=-1).clamp(max=image_size)
    labels = torch.randint(0, num_classes, (batch_size, OBJECTS_PER_IMAGE), generator=generator)
    images = torch.randint(0, 255, (batch_size, 3, image_size, image_size), dtype=torch.uint8)
    return {
        "images": images.to(device),
        "targets": [
            {"boxes": b.to(device), "labels": c.to(device)}
            for b, c in zip(boxes, labels, strict=True)
        ],
        "num_skipped": 0,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("overrides", nargs="*")
    add_output_option(parser, "gpu_throughput.json")
    arguments = parser.parse_args()
    if arguments.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu_throughput.py measures a CUDA GPU, and torch finds none on this "
            f"machine (torch {torch.__version__}, built for CUDA {torch.version.cuda}). Run it "
            "where a GPU is visible, or pass --device cpu for a smoke test of the script."
        )
    warnings.filterwarnings("ignore", message="You are trying to `self.log")
    device = torch.device(arguments.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    cfg, module, _ = default_module([*MODEL, *arguments.overrides])
    batch_size = arguments.batch_size or cfg.data.batch_size
    module.to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.937, foreach=True)
    forward_gflops = count_gflops(module.network, arguments.image_size)
    if arguments.compile:
        module.network.compile(backend="inductor")
    batch = random_batch(batch_size, arguments.image_size, cfg.data.num_classes, device)

    def steps(count: int) -> float:
        synchronize(device)
        started = time.perf_counter()
        for _ in range(count):
            train_step(module, optimizer, batch, arguments.precision)
        synchronize(device)
        return time.perf_counter() - started

    try:
        warm_up_seconds = steps(WARM_UP_STEPS)
        seconds = steps(arguments.steps)
    except torch.OutOfMemoryError:
        sys.exit(f"out of GPU memory at batch {batch_size}: pass a smaller --batch-size")
    images_per_s = batch_size * arguments.steps / seconds
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = arguments.peak_tflops or (
        peak_tflops(device_name, arguments.precision) if device.type == "cuda" else None
    )
    achieved_tflops = 3 * forward_gflops * images_per_s / 1e3
    record = {
        "command": invocation(),
        "device": device_name,
        "torch": torch.__version__,
        "model": f"{cfg.model.name} {cfg.model.size}",
        "implicit": cfg.experiment_name,
        "precision": arguments.precision,
        "compile": arguments.compile,
        "batch_size": batch_size,
        "image_size": arguments.image_size,
        "forward_gflops_per_image": round(forward_gflops, 2),
        "warm_up_seconds": round(warm_up_seconds, 1),
        "images_per_s": round(images_per_s, 1),
        "achieved_tflops": round(achieved_tflops, 1),
        "peak_tflops": peak,
        "mfu": round(achieved_tflops / peak, 3) if peak else None,
        "peak_memory_gib": (
            round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
            if device.type == "cuda"
            else None
        ),
    }
    if device.type == "cuda":
        write_record(arguments.output, record)
    else:
        print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

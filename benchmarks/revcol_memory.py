"""RevCol's reversible backward against the ordinary one: activation memory and step time.

    python benchmarks/revcol_memory.py [--columns 4 8 16] [--image-size 128] [--batch-size 2]
        [--steps 3] [--device cpu|cuda]

The backbone has RevCol-T's channels and blocks per level ([64, 128, 256, 512], [2, 2, 4, 2])
with 4, 8 and 16 columns (RevCol-T, S and a 16-column variant), drop path 0.2. For each count,
reversible and ordinary: the bytes autograd saves for the backward pass
(`analysis.memory.saved_activation_bytes`), the time of a forward + backward pass of the summed
outputs and, on CUDA, the peak memory allocated during that step. Writes
benchmarks/results/revcol_memory.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from records import add_output_option, invocation, write_record

from yolor_lightning.analysis.memory import saved_activation_bytes
from yolor_lightning.models.revcol import REVCOL_SIZES, RevColBackbone, RevColSize


def backbone(columns: int, reversible: bool, device: torch.device) -> RevColBackbone:
    t = REVCOL_SIZES["t"]
    spec = RevColSize(t.channels, t.layers, columns, drop_path=0.2)
    return RevColBackbone(spec, reversible=reversible).to(device).train()


def measure(
    columns: int, reversible: bool, images: torch.Tensor, steps: int
) -> dict[str, float | int | None]:
    torch.manual_seed(0)
    network = backbone(columns, reversible, images.device)
    saved = saved_activation_bytes(network, lambda: network.columns_forward(images))
    cuda = images.device.type == "cuda"
    times = []
    for step in range(steps + 1):  # one warm-up step
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        sum(level.float().mean() for level in network.columns_forward(images)).backward()
        if cuda:
            torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - started)
        network.zero_grad(set_to_none=True)
    return {
        "saved_activation_mb": round(saved / 2**20, 2),
        "step_seconds": round(min(times), 4),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_output_option(parser, "revcol_memory.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(
        args.batch_size, 3, args.image_size, args.image_size, generator=generator
    ).to(device)
    rows = []
    for columns in args.columns:
        for reversible in (True, False):
            row = {"columns": columns, "reversible": reversible}
            row |= measure(columns, reversible, images, args.steps)
            rows.append(row)
            print(json.dumps(row))
    environment = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    result = {
        "command": invocation(),
        "channels": list(REVCOL_SIZES["t"].channels),
        "layers": list(REVCOL_SIZES["t"].layers),
        "environment": environment,
        "rows": rows,
    }
    write_record(args.output, result)


if __name__ == "__main__":
    main()

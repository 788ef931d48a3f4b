"""Mixed precision: chosen from what the hardware runs natively; losses always in float32."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from yolor_lightning.config import compose_config
from yolor_lightning.environment import automatic_precision
from yolor_lightning.train import build_datamodule, build_module

SMALL_DATA = [
    "data.shapes.num_train=8",
    "data.shapes.num_val=8",
    "data.shapes.image_size=96",
    "data.image_size=96",
    "data.batch_size=4",
    "data.num_workers=0",
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule")
def test_auto_precision_is_bf16_exactly_on_cpus_with_native_bf16():
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", cpuinfo, re.MULTILINE)
    assert automatic_precision() == ("bf16-mixed" if native else "32-true")


def test_under_bf16_autocast_the_network_runs_in_bf16_and_the_losses_in_float32():
    cfg = compose_config(["task=jdc", *SMALL_DATA])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule).eval()
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = module(batch["images"])
        losses, parts, _ = module.task_losses(outputs, batch)
    assert outputs["det"][0].dtype == outputs["cls"].dtype == torch.bfloat16
    assert {loss.dtype for loss in [*losses.values(), *parts.values()]} == {torch.float32}
    with torch.no_grad():  # the same bf16 outputs, cast up by hand, outside autocast
        upcast = {"det": [level.float() for level in outputs["det"]], "cls": outputs["cls"].float()}
        expected, _, _ = module.task_losses(upcast, batch)
    for task, loss in expected.items():
        assert torch.equal(losses[task], loss), task

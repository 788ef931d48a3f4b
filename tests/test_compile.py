"""trainer.compile=true: a compiled tiny run trains, averages, checkpoints, folds and exports as an
eager one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolor_lightning.checkpoints import load_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.export import export, load_folded
from yolor_lightning.train import build_module, train

COMPILED_RUN = [
    "+experiment=yolor_csp",  # implicit sites (fa add + pr mul), which export folds
    "data.shapes.num_train=16",
    "data.shapes.num_val=8",
    "data.shapes.image_size=64",
    "data.image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
    "callbacks.ema.ramp_steps=1",
    "trainer.max_epochs=1",
    "trainer.compile=true",
]


@pytest.mark.slow
def test_compiled_run_checkpoints_plain_ema_weights_that_fold_and_export(tmp_path: Path):
    results = train(compose_config([*COMPILED_RUN, f"output_dir={tmp_path}"]))
    assert results["status"] == "finished"
    assert results["config"]["trainer"]["compile"] is True

    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    eager = build_module(compose_config(COMPILED_RUN))
    assert list(checkpoint["state_dict"]) == list(eager.state_dict())  # no `_orig_mod.` prefix
    ema, live = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(ema[key], live[key]) for key in ema if "weight" in key)

    eager.load_state_dict(ema)
    written = export(tmp_path / "checkpoints" / "last.ckpt")
    folded = load_folded(written["checkpoint"])
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = eager.network.eval()(images)["det"]
        actual = folded(images)["det"]
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

"""Training and evaluation leave per-image results beside their metrics, and they reproduce AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yolor_lightning.config import compose_config
from yolor_lightning.evaluate import evaluate
from yolor_lightning.report.bootstrap import ResampledAP
from yolor_lightning.tasks.per_image import PER_IMAGE_FILE, PerImageResults
from yolor_lightning.train import train

TINY = [
    "data.shapes.num_train=16",
    "data.shapes.num_val=8",
    "data.shapes.image_size=128",
    "data.image_size=128",
    "data.batch_size=8",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
    "trainer.max_epochs=1",
]


@pytest.mark.slow
def test_train_and_evaluate_save_per_image_results_that_give_their_ap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    results = train(compose_config([*TINY, f"output_dir={run}"]))
    checkpoint = run / "checkpoints" / "best.ckpt"
    evaluation = evaluate(
        compose_config([*TINY, f"ckpt_path={checkpoint}", f"output_dir={tmp_path / 'eval'}"])
    )

    trained = PerImageResults.load(run / PER_IMAGE_FILE)
    evaluated = PerImageResults.load(tmp_path / "eval" / PER_IMAGE_FILE)
    assert trained.num_images == 8
    ap = ResampledAP(trained)(np.ones(8, dtype=np.int64))
    assert ap["AP"] == pytest.approx(results["metrics"]["AP"], abs=1e-6)
    assert ap["AP50"] == pytest.approx(results["metrics"]["AP50"], abs=1e-6)
    assert evaluated.ground_truth_digest == trained.ground_truth_digest
    np.testing.assert_array_equal(evaluated.score, trained.score)
    assert evaluation["metrics"]["AP"] == pytest.approx(results["metrics"]["AP"], abs=1e-6)

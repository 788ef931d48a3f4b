"""``python -m yolor_lightning.evaluate``: bad input names the config key (the evaluation itself,
on 1 and 2 processes, is in test_ddp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolor_lightning.config import compose_config
from yolor_lightning.evaluate import evaluate


def test_evaluation_without_a_checkpoint_names_the_key(tmp_path: Path):
    with pytest.raises(ValueError, match="config key ckpt_path is required"):
        evaluate(compose_config([f"output_dir={tmp_path}"]))


def test_evaluation_of_a_missing_checkpoint_names_the_key_and_the_path(tmp_path: Path):
    missing = tmp_path / "checkpoints" / "best.ckpt"
    with pytest.raises(FileNotFoundError, match=f"config key ckpt_path={missing}: no such"):
        evaluate(compose_config([f"ckpt_path={missing}", f"output_dir={tmp_path}"]))

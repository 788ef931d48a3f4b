"""``make run`` (``python -m yolor_lightning``) ends with a short summary on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import TINY, offline_environment, run


@pytest.mark.slow
def test_a_training_run_ends_by_printing_its_metrics_and_where_its_files_are(tmp_path: Path):
    result = run(
        "yolor_lightning",
        *TINY,
        "trainer.max_epochs=1",
        "logger=csv",
        cwd=tmp_path,
        env=offline_environment(tmp_path / "cache"),
    )
    (results_file,) = tmp_path.glob("outputs/*/*/results.json")
    results = json.loads(results_file.read_text())
    folder = results_file.parent.relative_to(tmp_path)
    checkpoint = Path(results["evaluated_checkpoint"]).relative_to(tmp_path)
    (media,) = (tmp_path / folder / "media").glob("step_*")
    metrics = results["metrics"]
    assert result.stdout.splitlines()[-5:] == [
        f"finished: AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f} "
        f"(epochs 1, training {results['fit_seconds']} s)",
        f"run folder:  {folder}/  (results.json, csv/metrics.csv, wandb/)",
        f"checkpoint:  {checkpoint}",
        f"val images:  {media.relative_to(tmp_path)}/  (ground truth green, predictions)",
        f"predict:     python -m yolor_lightning.predict ckpt={checkpoint} "
        "source=IMAGE|FOLDER|VIDEO",
    ]

"""notebooks/compare_ablations.ipynb runs end to end on a tiny sweep (2 configurations x 2
seeds) and shows the report table, the chart, the per-seed points and the implicit vectors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from yolor_lightning.config import compose_config
from yolor_lightning.report import build_table, find_jobs
from yolor_lightning.report.per_seed import seed_checkpoint, seed_values
from yolor_lightning.train import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_ablations.ipynb"
TINY_RUN = [
    "data.shapes.num_train=16",
    "data.shapes.num_val=4",
    "data.shapes.image_size=64",
    "data.image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.media=null",
    "logger=csv",
    "trainer.precision=32",
]
CONFIGURATIONS = ("baseline", "ipr_mul")
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for experiment in CONFIGURATIONS:
            for seed in SEEDS:
                folder = sweep / f"{experiment}_{seed}"
                overrides = [f"+experiment={experiment}", f"seed={seed}", f"output_dir={folder}"]
                train(compose_config([*TINY_RUN, *overrides]))
    return sweep


@pytest.mark.slow
def test_seed_values_and_checkpoints_of_each_configuration(tiny_sweep):
    table = build_table(find_jobs([tiny_sweep]))
    values = seed_values(table)
    assert sorted(values) == sorted(CONFIGURATIONS)
    assert all(sorted(per_seed) == ["0", "1"] for per_seed in values.values())
    for row in table.rows:
        assert seed_checkpoint(row) == row.jobs[0].folder / "checkpoints" / "best.ckpt"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_notebook_compares_a_tiny_sweep(tiny_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOR_NOTEBOOK_SWEEP", str(tiny_sweep))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # from scratch: committed outputs, if any, are dropped
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=150,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert f"sweeps: {tiny_sweep}" in text
    assert "| `ipr_mul` | 2 |" in markdown and "Paired comparison" in markdown
    assert "ipr_mul: " in text and "best.ckpt" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # chart, seeds, vectors
    assert not list(tmp_path.iterdir())  # the notebook writes nothing

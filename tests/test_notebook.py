"""notebooks/inspect_implicit.ipynb is committed with its outputs and still runs end to end on a
tiny trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from yolor_lightning.analysis.implicit import checkpoint_model_config, find_sites, load_network
from yolor_lightning.config import compose_config
from yolor_lightning.train import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_implicit.ipynb"
# Every site, with an mf and an nn prior among them, trained for one epoch on 16 small images.
TINY_CHECKPOINT_RUN = [
    "+experiment=yolor_csp",
    "model.implicit.fa.prior=mf",
    "model.implicit.pr.prior=nn",
    "model.implicit.fa_star.operator=mul",
    "model.implicit.pr_star.operator=mul",
    "data.shapes.num_train=16",
    "data.shapes.num_val=4",
    "data.shapes.image_size=64",
    "data.image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "logger=csv",
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        results = train(compose_config([*TINY_CHECKPOINT_RUN, f"output_dir={output_dir}"]))
    return Path(results["best_checkpoint"])


@pytest.mark.slow
def test_load_network_restores_the_checkpoints_weights_and_sites(tiny_checkpoint):
    network = load_network(tiny_checkpoint)
    saved = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value, saved[f"network.{name}"])
    assert not network.training
    assert {site.name for site in find_sites(network)} == {"fa", "fa*", "pr", "pr*"}
    assert checkpoint_model_config(tiny_checkpoint)["implicit"]["fa"]["prior"] == "mf"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_notebook_runs_end_to_end_on_a_tiny_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOR_NOTEBOOK_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # from scratch: the committed outputs are dropped
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # "python3" runs ipykernel on this interpreter (jupyter_client swaps in sys.executable).
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"checkpoint: {tiny_checkpoint}" in text
    assert "max |unfolded - folded|" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3 + 2 * 3  # 2 factorised
    assert not (tmp_path / "outputs").exists()  # the given checkpoint was used, none trained


def test_the_committed_notebook_shows_its_outputs_and_figures():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "checkpoint:" in text and "max |unfolded - folded|" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    assert NOTEBOOK.stat().st_size < 400_000  # kept small enough to review in a diff

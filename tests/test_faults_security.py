"""A crafted checkpoint carrying a pickled call is refused by every entry point that reads
checkpoints, as a user runs them, and its call never runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from cli_runs import TINY, offline_environment, run
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from yolor_lightning.analysis.implicit import checkpoint_model_config, load_network
from yolor_lightning.checkpoints import ALLOWED_GLOBALS, UnsafeCheckpointError, load_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.export import load_folded
from yolor_lightning.train import build_module, train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_implicit.ipynb"


class Payload:
    """Unpickled without ``weights_only``, runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """A real tiny module's checkpoint with the payload among its hyper-parameters, and the
    marker file the payload would create."""
    module = build_module(compose_config([]))
    marker = tmp_path / "payload-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {**module.hparams, "note": Payload(marker)},
            "datamodule_hyper_parameters": {"image_size": 64},
        },
        path,
    )
    return path, marker


def assert_refused(message: str, checkpoint: Path) -> None:
    assert f"{checkpoint}: refused to load" in message
    assert f"disallowed global(s) {os.system.__module__}.system" in message


def test_the_payload_runs_when_unpickled_without_weights_only(crafted):
    """The control: the crafted file is live, so the tests below would see it run."""
    checkpoint, marker = crafted
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "load",
    [load_checkpoint, load_folded, load_network, checkpoint_model_config],
    ids=["load_checkpoint", "load_folded", "analysis.load_network", "analysis.model_config"],
)
def test_crafted_checkpoint_is_refused_by_the_python_api(crafted, load):
    checkpoint, marker = crafted
    with pytest.raises(UnsafeCheckpointError) as refused:
        load(checkpoint)
    assert_refused(str(refused.value), checkpoint)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "arguments"),
    [
        ("yolor_lightning", [*TINY, "trainer.max_epochs=1", "logger=csv", "ckpt_path={ckpt}"]),
        ("yolor_lightning.evaluate", [*TINY, "logger=csv", "ckpt_path={ckpt}"]),
        ("yolor_lightning.export", ["ckpt={ckpt}"]),
    ],
    ids=["train_resume", "evaluate", "export"],
)
def test_crafted_checkpoint_is_refused_by_every_command(crafted, module, arguments, tmp_path):
    checkpoint, marker = crafted
    environment = offline_environment(tmp_path.parent / "cache")
    arguments = [a.format(ckpt=checkpoint) for a in arguments]
    result = run(module, *arguments, cwd=tmp_path, env=environment, check=False)
    assert result.returncode != 0
    assert_refused(result.stderr, checkpoint)
    assert not marker.exists()
    results = [json.loads(path.read_text()) for path in tmp_path.rglob("results.json")]
    assert not [r for r in results if "metrics" in r]  # at most the failure is recorded
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_crafted_checkpoint_is_refused_by_the_notebook(crafted, tmp_path, monkeypatch):
    checkpoint, marker = crafted
    monkeypatch.setenv("YOLOR_NOTEBOOK_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(
        nbformat.read(NOTEBOOK, as_version=4),
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with pytest.raises(CellExecutionError, match="UnsafeCheckpointError") as refused:
        client.execute()
    assert_refused(str(refused.value), checkpoint)
    assert not marker.exists()


@pytest.mark.slow
def test_the_projects_checkpoints_need_no_global_beyond_the_allow_list(tmp_path):
    """A real checkpoint written by a Trainer holds only tensors, plain data and allowed types."""
    overrides = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "logger=csv"]
    results = train(compose_config([*overrides, f"output_dir={tmp_path}"]))
    for name in ("best.ckpt", "last.ckpt"):
        path = tmp_path / "checkpoints" / name
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        assert load_checkpoint(path)["hyper_parameters"]["model"]["size"] == "tiny"
    assert results["best_checkpoint"]

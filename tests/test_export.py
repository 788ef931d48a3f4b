"""Export folds a checkpoint into a plain network, as a checkpoint and as ONNX (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import lightning
import numpy as np
import onnxruntime
import pytest
import torch

from yolor_lightning.analysis.complexity import count_parameters
from yolor_lightning.config import compose_config
from yolor_lightning.export import export, load_folded, main
from yolor_lightning.implicit import Implicit
from yolor_lightning.models import build_yolov4_csp
from yolor_lightning.train import build_module

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def yolor_csp_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A checkpoint of tiny YOLOR-CSP (fa add + pr mul) with implicit tensors far from identity."""
    torch.manual_seed(0)
    module = build_module(compose_config(["+experiment=yolor_csp"]))
    implicit = [
        p for m in module.network.modules() if isinstance(m, Implicit) for p in m.parameters()
    ]
    assert implicit
    with torch.no_grad():
        for parameter in implicit:
            parameter.add_(torch.randn_like(parameter) * 0.3)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "best.ckpt"
    path.parent.mkdir()
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "datamodule_hyper_parameters": {"image_size": IMAGE_SIZE},
        },
        path,
    )
    return path, module.network.eval()


@pytest.mark.slow
def test_export_writes_a_folded_checkpoint_and_onnx_that_match_pytorch(yolor_csp_checkpoint):
    path, network = yolor_csp_checkpoint
    written = export(path)
    folder = path.parent / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["model_folded.onnx", "model_folded.pt"]

    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        expected = network.head.decode(network(images))

    folded = load_folded(written["checkpoint"])
    assert not any(isinstance(m, Implicit) for m in folded.modules())
    assert count_parameters(folded) == count_parameters(build_yolov4_csp("tiny", 8))
    with torch.no_grad():
        torch.testing.assert_close(
            folded.head.decode(folded(images)), expected, rtol=1e-5, atol=1e-5
        )

    session = onnxruntime.InferenceSession(str(written["onnx"]))
    (predictions,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(predictions, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_export_cli_names_the_allowed_arguments(tmp_path: Path):
    with pytest.raises(SystemExit, match="ckpt"):
        main(["checkpoint=x.ckpt"])
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        main([f"ckpt={tmp_path / 'missing.ckpt'}"])

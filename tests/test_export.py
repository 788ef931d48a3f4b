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


ALL_TASKS_WITH_SITES = [
    "+experiment=ijde",  # fa add + task.emb add
    "task.targets=[det,cls,emb]",
    "model.implicit.task_cls.operator=mul",
    "model.embedding_dim=16",
    "task.emb.loss=triplet",  # id_ce's identity classifier needs a DataModule and is not exported
]


@pytest.fixture(
    scope="module",
    params=[["+experiment=yolor_csp"], ALL_TASKS_WITH_SITES],
    ids=["yolor_csp", "det_cls_emb"],
)
def implicit_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, torch.nn.Module]:
    """A checkpoint of a tiny network with implicit sites (YOLOR-CSP: fa add + pr mul; or every
    task with its own site) whose implicit tensors are far from the identity."""
    torch.manual_seed(0)
    module = build_module(compose_config(request.param))
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


def deployed_outputs(network: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What deployment wants from each task, computed independently of the export wrapper."""
    with torch.no_grad():
        outputs = network(images)
    expected = {}
    if "det" in outputs:
        expected["predictions"] = network.heads["det"].decode(outputs["det"])
    if "cls" in outputs:
        expected["class_probabilities"] = outputs["cls"].sigmoid()
    for level, embedding in enumerate(outputs.get("emb", [])):
        expected[f"embeddings_p{level + 3}"] = embedding / embedding.norm(dim=1, keepdim=True)
    return expected


@pytest.mark.slow
def test_export_writes_a_folded_checkpoint_and_onnx_that_match_pytorch(implicit_checkpoint):
    path, network = implicit_checkpoint
    written = export(path)
    folder = path.parent / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["model_folded.onnx", "model_folded.pt"]

    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    expected = deployed_outputs(network, images)

    folded = load_folded(written["checkpoint"])
    assert not any(isinstance(m, Implicit) for m in folded.modules())
    dim = network.heads["emb"].dim if "emb" in network.heads else 128
    plain = build_yolov4_csp("tiny", 8, tasks=network.tasks, embedding_dim=dim)
    assert count_parameters(folded) == count_parameters(plain)
    for name, value in deployed_outputs(folded, images).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5)

    session = onnxruntime.InferenceSession(str(written["onnx"]))
    names = [output.name for output in session.get_outputs()]
    assert names == list(expected)
    for name, value in zip(names, session.run(None, {"images": images.numpy()}), strict=True):
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=1e-4, atol=1e-4)


def test_export_cli_names_the_allowed_arguments(tmp_path: Path):
    with pytest.raises(SystemExit, match="ckpt"):
        main(["checkpoint=x.ckpt"])
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        main([f"ckpt={tmp_path / 'missing.ckpt'}"])

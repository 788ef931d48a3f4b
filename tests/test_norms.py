"""model.norm: the Conv blocks' normalisation (bn, gn, syncbn), its layers, its training step and
what folding and export do with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from hydra.errors import ConfigCompositionException
from test_train import TINY_RUN
from torch import nn

from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.config import ConfigValueError, check_values, compose_config, plain
from yolor_lightning.export import FOLDED_CHECKPOINT, FOLDED_ONNX, load_folded, main
from yolor_lightning.models import build_network
from yolor_lightning.models.blocks import Conv
from yolor_lightning.models.fusion import fuse
from yolor_lightning.models.gelan_blocks import RepConvN, YoloV9Conv
from yolor_lightning.models.norms import NORMS, group_count, make_norm
from yolor_lightning.tasks.loss import YoloLoss
from yolor_lightning.train import train

LAYERS = {"bn": nn.BatchNorm2d, "gn": nn.GroupNorm, "syncbn": nn.SyncBatchNorm}


def network_of(*overrides: str) -> nn.Module:
    return build_network(plain(compose_config(list(overrides)).model))


@pytest.mark.parametrize("model", ["yolov4_csp", "gelan"])
@pytest.mark.parametrize("norm", NORMS)
def test_every_conv_block_gets_the_chosen_norm_with_its_eps(model: str, norm: str) -> None:
    network = network_of(f"model={model}", f"model.norm={norm}")
    blocks = [m for m in network.modules() if isinstance(m, Conv)]
    assert blocks
    for block in blocks:
        layer = block[1]
        assert type(layer) is LAYERS[norm]
        assert layer.eps == (1e-3 if isinstance(block, YoloV9Conv) else 1e-4)
        if norm == "gn":
            assert layer.num_groups == group_count(layer.num_channels)
        else:
            assert layer.momentum == 0.03
    others = {type(m) for m in network.modules() if isinstance(m, nn.modules.batchnorm._NormBase)}
    assert others <= {LAYERS[norm]}, "a normalisation outside the Conv blocks"


@pytest.mark.parametrize(
    ("channels", "groups"),
    [(8, 4), (12, 6), (16, 8), (24, 12), (32, 16), (48, 24), (64, 32), (96, 32), (1024, 32)],
)
def test_group_norm_takes_32_groups_or_fewer_of_at_least_2_channels(channels, groups) -> None:
    assert group_count(channels) == groups
    assert channels % groups == 0 and channels // groups >= 2


def test_unknown_norm_names_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["model.norm=ln"])
    message = "\n".join(str(e) for e in (error.value, error.value.__cause__) if e is not None)
    assert "model.norm" in message
    assert all(name in message for name in NORMS)
    with pytest.raises(ValueError, match=r"model\.norm='ln' is unknown: allowed values are bn, gn"):
        make_norm("ln", 16, 1e-4)


def test_syncbn_is_refused_for_ddp_on_cpus_and_is_batch_norm_in_one_process() -> None:
    with pytest.raises(ConfigValueError, match=r"model\.norm='syncbn'.*GPU tensors only"):
        check_values(compose_config(["model.norm=syncbn", "trainer=ddp_cpu"]))
    check_values(compose_config(["model.norm=syncbn", "trainer=ddp"]))
    bn, syncbn = network_of(), network_of("model.norm=syncbn")
    syncbn.load_state_dict(bn.state_dict())
    images = torch.rand(2, 3, 64, 64)
    for a, b in zip(bn.train()(images)["det"], syncbn.train()(images)["det"], strict=True):
        torch.testing.assert_close(a, b)


def test_revcol_has_no_conv_block_for_another_norm() -> None:
    with pytest.raises(ValueError, match=r"model\.norm='gn' has no Conv block"):
        network_of("model=revcol", "model.norm=gn")


def test_a_group_norm_network_takes_a_training_step_and_fuse_keeps_its_group_norms() -> None:
    torch.manual_seed(0)
    network = network_of("model.norm=gn").train()
    head = network.heads["det"]
    loss_fn = YoloLoss(head.anchors, head.strides, num_classes=8)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([3])}] * 2
    norms = [m for m in network.modules() if isinstance(m, nn.GroupNorm)]
    before = [norm.weight.detach().clone() for norm in norms]
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    loss, _ = loss_fn(network(torch.rand(2, 3, 64, 64))["det"], targets)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(n.weight, b) for n, b in zip(norms, before, strict=True))

    fused = fuse(network.eval())
    assert sum(isinstance(m, nn.GroupNorm) for m in fused.modules()) == len(norms)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(network(images)["det"], fused(images)["det"], strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"model\.norm=gn.*cannot be folded"):
        next(m for m in network.modules() if isinstance(m, Conv)).fused_weights()


def test_fuse_keeps_a_repconvn_with_group_norms_whole() -> None:
    network = network_of("model=gelan", "model.norm=gn").eval()
    fused = fuse(network)
    assert sum(isinstance(m, RepConvN) for m in fused.modules()) == sum(
        isinstance(m, RepConvN) for m in network.modules()
    )
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(network(images)["det"], fused(images)["det"], strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_a_group_norm_run_trains_and_exports_with_its_group_norms_unfolded(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = [*TINY_RUN, "model.norm=gn", "trainer.max_epochs=1", "logger=csv"]
    overrides += ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    train(compose_config([*overrides, f"output_dir={tmp_path}"]))
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    network = module_from_checkpoint(load_checkpoint(ckpt)).network.eval()
    assert any(isinstance(m, nn.GroupNorm) for m in network.modules())

    main([f"ckpt={ckpt}"])
    count = sum(isinstance(m, nn.GroupNorm) for m in network.modules())
    assert f"model.norm=gn: {count} GroupNorm layers stay" in capsys.readouterr().out
    folded = load_folded(ckpt.parent / "export" / FOLDED_CHECKPOINT)
    assert sum(isinstance(m, nn.GroupNorm) for m in folded.modules()) == count
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = network.heads["det"].decode(network(images)["det"])
    session = onnxruntime.InferenceSession(str(ckpt.parent / "export" / FOLDED_ONNX))
    (predictions,) = session.run(None, {"images": images.numpy()})
    # decoded boxes are in pixels (up to 128): float32 group norms in another operation order
    # (onnxruntime's kernels) differ by up to about 1e-4 of a coordinate, depending on the CPU
    np.testing.assert_allclose(predictions, expected.numpy(), rtol=1e-3, atol=1e-3)

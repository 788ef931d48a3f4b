"""Validation evaluates the inference form of the network (implicit knowledge folded, batch norms
fused): the outputs and loss of the network itself, and nothing of it reaches the checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from cli_runs import TINY
from lightning.pytorch.callbacks import Callback
from torch import nn

from yolor_lightning.config import compose_config
from yolor_lightning.implicit import Implicit
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import build_datamodule, build_module


class EvaluatedNetworks(Callback):
    """The network each validation batch went through."""

    def __init__(self) -> None:
        self.networks: list[nn.Module] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.networks.append(pl_module._evaluated_network)


class UnfoldedValidation(UnifiedModule):
    """The reference: validation through the network itself, in eval mode."""

    def on_validation_epoch_start(self) -> None:
        object.__setattr__(self, "_evaluated_network", self.network)


def randomise_norms_and_priors(module: nn.Module) -> None:
    """Running statistics, affine terms and implicit priors far from their initial values, so
    that folding them changes every weight it touches."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                size = layer.num_features
                layer.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                layer.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(size, generator=generator) * 0.1)
            if isinstance(layer, Implicit):
                for parameter in layer.parameters():
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)


def validate(module: L.LightningModule, datamodule, tmp_path: Path, probe: Callback) -> dict:
    trainer = L.Trainer(
        precision="32-true",
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[probe],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return metrics


def test_validation_runs_the_inference_form_with_the_outputs_of_the_network(tmp_path: Path):
    cfg = compose_config([*TINY, "+experiment=ifa_mul", f"output_dir={tmp_path}"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    randomise_norms_and_priors(module)
    reference = UnfoldedValidation(**module.hparams)
    reference.load_state_dict(module.state_dict())
    keys = set(module.state_dict())

    folded, unfolded = EvaluatedNetworks(), EvaluatedNetworks()
    metrics = validate(module, datamodule, tmp_path, folded)
    expected = validate(reference, datamodule, tmp_path, unfolded)

    assert len(folded.networks) == 2  # 16 validation images in batches of 8
    evaluated = folded.networks[0]
    assert evaluated is folded.networks[1] and evaluated is not module.network
    assert not any(isinstance(m, (nn.BatchNorm2d, Implicit)) for m in evaluated.modules())
    assert any(isinstance(m, Implicit) for m in unfolded.networks[0].modules())
    images = module.network_input(next(iter(datamodule.val_dataloader()))["images"])
    with torch.no_grad():
        outputs, evaluated_outputs = module.network.eval()(images), evaluated(images)
    for level, evaluated_level in zip(outputs["det"], evaluated_outputs["det"], strict=True):
        torch.testing.assert_close(evaluated_level, level, rtol=1e-5, atol=1e-5)
    # the loss is continuous in the outputs; AP is not: an untrained network's scores nearly
    # tie, and float rounding reorders them
    assert metrics.keys() == expected.keys()
    assert metrics["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-5)
    assert module._evaluated_network is None
    assert set(module.state_dict()) == keys

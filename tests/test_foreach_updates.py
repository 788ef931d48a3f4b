"""The foreach optimiser and EMA updates give the per-tensor results on a real training step."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from yolor_lightning.callbacks.ema import ramped_ema_update
from yolor_lightning.config import compose_config
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import build_module

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def shapes_batch() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "images": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8, generator=generator),
        "targets": [
            {"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[20.0, 4.0, 60.0, 50.0]]), "labels": torch.tensor([3])},
        ],
        "num_skipped": 0,
    }


def trained_module(steps: int) -> tuple[UnifiedModule, torch.optim.Optimizer]:
    """The default config's module after ``steps`` real SGD steps on one batch."""
    module = build_module(compose_config(["model.size=tiny"]))
    module.trainer = type(
        "Trainer", (), {"estimated_stepping_batches": 10, "max_epochs": 1, "world_size": 1}
    )
    optimizer = module.configure_optimizers()["optimizer"]
    module.trainer = None
    module.train()
    for _ in range(steps):
        optimizer.zero_grad()
        module.training_step(shapes_batch(), 0).backward()
        optimizer.step()
    return module, optimizer


class LoopedSGD(torch.optim.SGD):
    """SGD as torch runs it on the CPU by default: a Python loop over the tensors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "foreach": False})


def test_foreach_sgd_steps_match_the_per_tensor_loop(monkeypatch: pytest.MonkeyPatch):
    foreach, optimizer = trained_module(steps=3)
    assert optimizer.defaults["foreach"]
    monkeypatch.setattr(torch.optim, "SGD", LoopedSGD)
    looped, optimizer = trained_module(steps=3)
    assert not optimizer.defaults["foreach"]
    for (name, a), b in zip(foreach.named_parameters(), looped.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_ema_update_matches_the_per_tensor_formula_on_every_weight_and_buffer():
    module, _ = trained_module(steps=1)
    current = list(module.network.state_dict().values())
    start = copy.deepcopy(module.network).state_dict()
    with torch.no_grad():
        for value in start.values():
            value.mul_(0.5) if value.is_floating_point() else value.zero_()
    averaged = [value.clone() for value in start.values()]
    floats = [i for i, value in enumerate(averaged) if value.is_floating_point()]
    integers = [i for i, value in enumerate(averaged) if not value.is_floating_point()]
    assert floats and integers  # BatchNorm's batch counters are integers

    update = ramped_ema_update(decay=0.9, ramp_steps=4.0)
    update([averaged[i] for i in floats], [current[i] for i in floats], torch.tensor(3))
    update([averaged[i] for i in integers], [current[i] for i in integers], torch.tensor(3))

    decay = 0.9 * (1 - torch.exp(torch.tensor(-3 / 4.0)).item())
    for i, (name, before) in enumerate(start.items()):
        expected = decay * before + (1 - decay) * current[i] if i in floats else current[i]
        torch.testing.assert_close(averaged[i], expected, msg=name)

"""The recipe's parts checked against hand-computed values: schedule, EMA, groups, I/O, W&B mode."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.callbacks.checkpoint_io import AtomicCheckpointIO
from yolor_lightning.callbacks.ema import ramped_ema_update
from yolor_lightning.config import compose_config
from yolor_lightning.implicit import Implicit, sparsity_penalty
from yolor_lightning.loggers import wandb_mode
from yolor_lightning.models import build_yolov4_csp
from yolor_lightning.summary import main as summary_main
from yolor_lightning.tasks.schedule import WarmupCosineSchedule
from yolor_lightning.tasks.unified import split_decay_groups
from yolor_lightning.train import build_module


def make_schedule() -> tuple[torch.optim.SGD, WarmupCosineSchedule]:
    weight, bias = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD(
        [{"params": [weight]}, {"params": [bias], "is_bias": True}], lr=0.01, momentum=0.9
    )
    schedule = WarmupCosineSchedule(
        optimizer,
        total_steps=10,
        warmup_steps=4,
        final_lr_fraction=0.1,
        warmup_bias_lr=0.1,
        warmup_momentum=0.8,
    )
    return optimizer, schedule


def cosine(step: int) -> float:
    return 0.1 + 0.9 * (1 + math.cos(math.pi * step / 10)) / 2


def test_warmup_starts_bias_high_weights_at_zero_and_momentum_low():
    optimizer, _ = make_schedule()
    weights, biases = optimizer.param_groups
    assert weights["lr"] == pytest.approx(0.0)
    assert biases["lr"] == pytest.approx(0.1)
    assert weights["momentum"] == pytest.approx(0.8)


def test_warmup_interpolates_towards_the_cosine_curve():
    optimizer, schedule = make_schedule()
    for _ in range(2):
        optimizer.step()
        schedule.step()
    weights, biases = optimizer.param_groups
    assert weights["lr"] == pytest.approx(0.01 * cosine(2) * 0.5)
    assert biases["lr"] == pytest.approx(0.1 + (0.01 * cosine(2) - 0.1) * 0.5)
    assert weights["momentum"] == pytest.approx(0.85)


def test_after_warmup_every_group_follows_cosine_down_to_the_final_fraction():
    optimizer, schedule = make_schedule()
    for step in range(1, 11):
        optimizer.step()
        schedule.step()
        if step >= 4:
            for group in optimizer.param_groups:
                assert group["lr"] == pytest.approx(0.01 * cosine(step))
                assert group["momentum"] == pytest.approx(0.9)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_ramped_ema_uses_the_ramped_decay_and_copies_integer_buffers():
    update = ramped_ema_update(decay=0.9, ramp_steps=1.0)
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    update(averaged, current, torch.tensor(1))
    decay = 0.9 * (1 - math.exp(-1.0))
    torch.testing.assert_close(averaged[0], torch.full((3,), 1 - decay))
    counters = [torch.tensor(3)]
    update(counters, [torch.tensor(7)], torch.tensor(5))
    assert counters[0].item() == 7


def test_decay_groups_put_each_parameter_in_exactly_one_group():
    network = build_yolov4_csp("tiny", num_classes=8)
    groups = split_decay_groups(network)
    grouped = [id(p) for group in groups.values() for p in group]
    assert sorted(grouped) == sorted(id(p) for p in network.parameters())
    norms = {id(m.weight) for m in network.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in groups["norms"]} == norms
    assert all(p.ndim == 4 for p in groups["weights"])
    assert all(p.ndim == 1 for p in groups["biases"])


def test_checkpoint_write_is_atomic(tmp_path: Path):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"step": 2, "unpicklable": lambda: None}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_wandb_is_offline_unless_the_user_opts_in(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled"
    assert wandb_mode("offline") == "offline"


def test_summary_json_reports_exact_parameters_and_gflops(capsys: pytest.CaptureFixture[str]):
    summary_main(["model.size=small", "data.image_size=320", "--json"])
    summary = json.loads(capsys.readouterr().out)
    network = build_yolov4_csp("small", num_classes=8)
    assert summary["params"] == count_parameters(network)
    assert summary["gflops"] == pytest.approx(count_gflops(network, 320), abs=1e-3)
    assert (summary["size"], summary["image_size"], summary["num_classes"]) == ("small", 320, 8)


def test_summary_table_prints_the_integer_parameter_count(capsys: pytest.CaptureFixture[str]):
    summary_main(["model.size=tiny"])
    assert str(count_parameters(build_yolov4_csp("tiny", num_classes=8))) in capsys.readouterr().out


def implicit_parameter_ids(network: nn.Module) -> set[int]:
    return {id(p) for m in network.modules() if isinstance(m, Implicit) for p in m.parameters()}


def test_implicit_knowledge_gets_its_own_group_without_weight_decay():
    module = build_module(compose_config(["+experiment=ifa_nn", "task.optimizer.lr=0.01"]))
    implicit = implicit_parameter_ids(module.network)
    assert len(implicit) == 3 * 3  # z, W and b of the nn prior at each level
    groups = split_decay_groups(module.network)
    assert {id(p) for p in groups["implicit"]} == implicit
    grouped = [id(p) for group in groups.values() for p in group]
    assert sorted(grouped) == sorted(id(p) for p in module.network.parameters())

    module.trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1, world_size=1)
    optimizer = module.configure_optimizers()["optimizer"]
    (group,) = [g for g in optimizer.param_groups if implicit & {id(p) for p in g["params"]}]
    assert {id(p) for p in group["params"]} == implicit
    assert group["weight_decay"] == 0.0
    assert max(g["weight_decay"] for g in optimizer.param_groups) > 0


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_sparse_mf_coefficients_add_their_weighted_l1_norm_to_the_training_loss():
    torch.manual_seed(0)
    overrides = ["+experiment=ifa_mf", "model.implicit.fa.coefficients=sparse"]
    module = build_module(compose_config([*overrides, "task.loss.sparsity_gain=0.5"]))
    batch = {
        "images": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8),
        "targets": [
            {"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        ],
        "num_skipped": 0,
    }
    penalty = sparsity_penalty(module.network)
    assert penalty is not None and penalty.item() == pytest.approx(3.0)  # 3 levels, sum(c) = 1
    with_penalty = module.training_step(batch, 0)
    module.sparsity_gain = 0.0
    without = module.training_step(batch, 0)
    assert (with_penalty - without).item() == pytest.approx(2 * 0.5 * penalty.item(), rel=1e-4)

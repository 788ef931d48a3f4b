"""RevCol against the official counts, its reversible backward against the ordinary one
(gradients and saved activations), drop path drawn from the run's seed, and RevCol as the
backbone of every head and task."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from cli_runs import STEPS_PER_EPOCH as DDP_STEPS_PER_EPOCH
from cli_runs import TINY, offline_environment, run
from test_train import STEPS_PER_EPOCH, TINY_RUN

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.analysis.memory import saved_activation_bytes
from yolor_lightning.config import ConfigValueError, check_values, compose_config, plain
from yolor_lightning.export import export, load_folded
from yolor_lightning.models import build_network
from yolor_lightning.models.initialization import initialize
from yolor_lightning.models.revcol import (
    ALPHA_MIN,
    RevColBackbone,
    RevColClassifier,
    RevColSize,
)
from yolor_lightning.models.revcol_blocks import DropPath
from yolor_lightning.report import write_report
from yolor_lightning.summary import summarize
from yolor_lightning.train import build_module, train

# megvii-research/RevCol: ImageNet-1K classification form (no intermediate supervision heads).
OFFICIAL_PARAMETERS = {"t": 30_456_168, "s": 60_568_424, "b": 138_616_408}
SMALL = RevColSize((8, 16, 32, 64), (1, 1, 2, 1), columns=4, drop_path=0.2)


def small_pair(dtype: torch.dtype, columns: int = 4) -> tuple[RevColBackbone, RevColBackbone]:
    """A small RevCol in training mode built twice with one state_dict: reversible, ordinary."""
    spec = RevColSize(SMALL.channels, SMALL.layers, columns, SMALL.drop_path)
    reversible = RevColBackbone(spec, reversible=True).to(dtype).train()
    initialize(reversible, seed=3)
    with torch.no_grad():  # the α away from 0.5 and the layer scales away from 1e-6
        for name, parameter in reversible.named_parameters():
            if "alpha" in name or name.endswith("gamma"):
                parameter.uniform_(0.3, 1.2)
    ordinary = copy.deepcopy(reversible)
    ordinary.reversible = False
    return reversible, ordinary


def loss_and_gradients(
    backbone: RevColBackbone, images: torch.Tensor, weights: list[torch.Tensor]
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    images = images.clone().requires_grad_(True)
    levels = backbone.columns_forward(images)
    sum((level * w).sum() for level, w in zip(levels, weights, strict=True)).backward()
    gradients = {name: p.grad for name, p in backbone.named_parameters()}
    return [level.detach() for level in levels], {"images": images.grad, **gradients}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference, relative to the largest magnitude of `expected` (a gradient
    summed over many terms is compared at its own scale)."""
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return ((actual - expected).abs().max() / scale).item()


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMETERS))
def test_classification_form_has_the_official_parameter_count(size: str) -> None:
    with torch.device("meta"):
        classifier = RevColClassifier(RevColBackbone(size))
    assert count_parameters(classifier) == OFFICIAL_PARAMETERS[size]


@pytest.mark.parametrize(("size", "multiply_adds"), [("t", 4.5), ("s", 9.0), ("b", 16.6)])
def test_classification_form_costs_the_official_multiply_adds_at_224(
    size: str, multiply_adds: float
) -> None:
    """RevCol's README gives multiply-adds; this project counts two FLOPs per multiply-add."""
    with torch.device("meta"):
        classifier = RevColClassifier(RevColBackbone(size))
    assert count_gflops(classifier, 224) == pytest.approx(2 * multiply_adds, abs=0.1)


def test_summary_prints_the_classification_form() -> None:
    summary = summarize(compose_config(["model=revcol", "model.size=t"]))
    assert summary["params_classification"] == OFFICIAL_PARAMETERS["t"]


def test_detection_backbone_gives_the_last_column_at_strides_8_16_32() -> None:
    backbone = RevColBackbone("mini").eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 96))
    assert backbone.strides == (8, 16, 32)
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, 64 // s, 96 // s) for c, s in zip(backbone.out_channels, backbone.strides, strict=True)
    ]


def test_full_size_revcol_t_detector_runs_at_a_small_resolution() -> None:
    network = build_network({**plain(compose_config(["model=revcol"]).model), "size": "t"})
    assert count_parameters(network.backbone) == OFFICIAL_PARAMETERS["t"] - 2 * 512 - 513 * 1000
    with torch.no_grad():
        outputs = network.eval()(torch.rand(1, 3, 64, 64))
    assert [tuple(level.shape) for level in outputs["det"]] == [
        (1, 3, g, g, 5 + 8) for g in (8, 4, 2)
    ]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_reversible_backward_gives_the_ordinary_gradients_with_drop_path(
    dtype: torch.dtype, tolerance: float
) -> None:
    reversible, ordinary = small_pair(dtype)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=generator, dtype=dtype)
    weights = [torch.randn(1, c, 1, 1, generator=generator, dtype=dtype) for c in SMALL.channels]
    outputs, gradients = loss_and_gradients(reversible, images, weights)
    expected_outputs, expected_gradients = loss_and_gradients(ordinary, images, weights)
    with torch.no_grad():
        undropped = reversible.eval().columns_forward(images)
    assert any(not torch.equal(a, b) for a, b in zip(outputs, undropped, strict=True))
    for a, b in zip(outputs, expected_outputs, strict=True):
        assert relative_error(a, b) < tolerance
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        expected = expected_gradients[name]
        assert gradient is not None and expected is not None, name
        assert relative_error(gradient, expected) < tolerance, name


def test_reversible_columns_keep_a_quarter_of_the_activations_and_only_their_outputs() -> None:
    images = torch.rand(2, 3, 32, 32)
    saved = {}
    for columns in (4, 5):
        reversible, ordinary = small_pair(torch.float32, columns)
        saved[columns] = tuple(
            saved_activation_bytes(backbone, lambda b=backbone: b.columns_forward(images))
            for backbone in (reversible, ordinary)
        )
    (reversible_4, ordinary_4), (reversible_5, _) = saved[4], saved[5]
    assert reversible_4 < ordinary_4 / 4
    with torch.no_grad():
        levels = RevColBackbone(SMALL).eval().columns_forward(images)
    one_column = sum(level.untyped_storage().nbytes() for level in levels)
    assert reversible_5 - reversible_4 == one_column


def test_alphas_are_kept_away_from_zero_with_their_sign() -> None:
    backbone = RevColBackbone(SMALL)
    column = backbone.columns[1]
    assert all(torch.all(alpha == 0.5) for alpha in column.alphas)
    with torch.no_grad():
        column.alpha0.zero_()
        column.alpha1.fill_(-1e-6)
    backbone.eval()(torch.rand(1, 3, 32, 32))
    assert torch.all(column.alpha0 == ALPHA_MIN) and torch.all(column.alpha1 == -ALPHA_MIN)


def drop_decisions(backbone: RevColBackbone) -> list[torch.Tensor]:
    """Which samples each drop path keeps in one training forward pass."""
    kept = []

    def record(module: DropPath, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        kept.append(output.flatten(1).abs().sum(1) > 0)

    handles = [
        m.register_forward_hook(record) for m in backbone.modules() if isinstance(m, DropPath)
    ]
    backbone.train().columns_forward(torch.ones(8, 3, 32, 32))
    for handle in handles:
        handle.remove()
    return kept


def test_drop_path_draws_from_the_run_seed_not_the_global_rng() -> None:
    def seeded(seed: int) -> RevColBackbone:
        backbone = RevColBackbone(SMALL)
        initialize(backbone, seed)
        return backbone

    first, again = seeded(1), seeded(1)
    global_state = torch.get_rng_state()
    decisions = drop_decisions(first)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert all(torch.equal(a, b) for a, b in zip(decisions, drop_decisions(again), strict=True))
    assert any(not d.all() for d in decisions)
    others = drop_decisions(seeded(2))
    assert any(not torch.equal(a, b) for a, b in zip(decisions, others, strict=True))
    next_pass = drop_decisions(first)  # forward pass 1 draws anew; the count is saved
    assert any(not torch.equal(a, b) for a, b in zip(decisions, next_pass, strict=True))
    assert int(first.state_dict()["forward_passes"]) == 2


@pytest.mark.parametrize("head", ["anchor", "dfl"])
def test_training_module_takes_a_reversible_step_on_every_task(head: str) -> None:
    overrides = ["+experiment=yolor_revcol", "task=jde", f"model.head={head}"]
    cfg = compose_config([*overrides, "task.emb.loss=triplet"])
    module = build_module(cfg).train()
    assert module.network.backbone.reversible
    boxes = torch.tensor([[8.0, 8.0, 40.0, 32.0], [30.0, 20.0, 60.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([0, 3]), "identities": torch.tensor([4, 7])}
    outputs = module(torch.rand(2, 3, 64, 64))
    assert [level.shape[-2:] for level in outputs["emb"]] == [(8, 8), (4, 4), (2, 2)]
    losses, _, _ = module.task_losses(outputs, {"targets": [target] * 2})
    sum(losses.values()).backward()
    shared = [*module.network.backbone.parameters(), *module.network.neck.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in shared)


def test_cls_head_reads_the_revcol_neck() -> None:
    network = build_network(plain(compose_config(["+experiment=revcol", "task=cls"]).model))
    with torch.no_grad():
        assert network.eval()(torch.rand(2, 3, 64, 64))["cls"].shape == (2, 8)


@pytest.mark.slow
def test_yolor_revcol_trains_reversibly_evaluates_exports_and_reports(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["+experiment=yolor_revcol", *TINY_RUN, "trainer.max_epochs=1", "logger=csv"]
    results = train(compose_config([*overrides, f"output_dir={run}"]))
    assert results["status"] == "finished" and results["experiment"] == "yolor_revcol"
    assert results["config"]["model"]["reversible"] is True
    assert results["choices"]["implicit"] == "fa:add:vector+pr:mul:vector"
    assert 0 <= results["metrics"]["AP"] <= 1
    revcol = build_network({**plain(compose_config(["model=revcol"]).model), "num_classes": 8})
    assert results["model"]["params"] > results["model"]["params_folded"]
    assert results["model"]["params_folded"] == count_parameters(revcol)
    folded = load_folded(export(run / "checkpoints" / "best.ckpt")["checkpoint"])
    assert count_parameters(folded) == count_parameters(revcol)
    assert int(folded.backbone.forward_passes) == STEPS_PER_EPOCH  # one drop-path draw per step
    report = write_report([run], tmp_path / "report", resamples=0)
    assert "yolor_revcol" in report.markdown


@pytest.mark.slow
def test_reversible_revcol_trains_with_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """The reversible Function returns the parameters' gradients through autograd (they are
    its inputs), so DDP's reducer sees each parameter once per step: no static graph needed."""
    environment = offline_environment(Path(os.environ["YOLOR_LIGHTNING_CACHE"]))
    arguments = ["+experiment=yolor_revcol", "trainer=ddp_cpu", "trainer.max_epochs=1", *TINY]
    run("yolor_lightning", *arguments, cwd=tmp_path, env=environment)
    (folder,) = tmp_path.glob("outputs/*/*")
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "finished" and results["config"]["model"]["reversible"]
    assert (results["epochs"], results["steps"]) == (1, DDP_STEPS_PER_EPOCH[2])


def test_config_refuses_a_drop_path_of_one() -> None:
    with pytest.raises(ConfigValueError, match=r"model.drop_path=1.0.*\[0, 1\)"):
        check_values(compose_config(["model=revcol", "model.drop_path=1.0"]))

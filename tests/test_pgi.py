"""YOLOv9's PGI: the training-only auxiliary branch, its loss weight, and its removal at export."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch
from test_train import TINY_RUN

from yolor_lightning.analysis.complexity import count_gflops, count_parameters, model_cost
from yolor_lightning.config import compose_config, plain
from yolor_lightning.export import export, load_folded
from yolor_lightning.models import build_network
from yolor_lightning.models.fusion import fuse
from yolor_lightning.models.pgi import RoutedAuxiliary, TopDownAuxiliary
from yolor_lightning.report import write_report
from yolor_lightning.train import build_module, train

TARGETS = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 32.0]]), "labels": torch.tensor([1])}] * 2


def yolov9(size: str, num_classes: int = 80, auxiliary: str | None = "pgi") -> torch.nn.Module:
    return build_network(
        {
            "backbone": "gelan",
            "neck": "gelan_pan",
            "head": "dfl",
            "size": size,
            "num_classes": num_classes,
            "auxiliary": auxiliary,
        }
    )


def test_yolov9_c_trains_with_the_official_parameters_and_gflops() -> None:
    with torch.device("meta"):
        network = yolov9("c")
    assert isinstance(network.auxiliary, RoutedAuxiliary)
    assert count_parameters(network) == 51_182_080
    assert count_gflops(network, 640, auxiliary=True) == pytest.approx(238.7, abs=0.05)


def test_yolov9_c_without_its_branch_is_gelan_c() -> None:
    with torch.device("meta"):
        deployed = yolov9("c").without_auxiliary()
        gelan = yolov9("c", auxiliary=None)
    assert count_parameters(deployed) == count_parameters(gelan) == 25_498_752
    assert deployed.state_dict().keys() == gelan.state_dict().keys()


def test_cost_counts_the_branch_in_training_form_and_drops_it_fused() -> None:
    with torch.device("meta"):
        cost = model_cost(yolov9("c"), 640)
    assert (cost["params"], cost["params_fused"]) == (51_182_080, 25_288_768)
    assert cost["gflops_fused"] == pytest.approx(102.1, abs=0.05)


def test_small_sizes_take_the_extra_top_down_path() -> None:
    network = yolov9("t", num_classes=3).train()
    assert isinstance(network.auxiliary, TopDownAuxiliary)
    outputs = network(torch.rand(1, 3, 64, 64))
    assert [level.shape for level in outputs["det_aux"]] == [
        level.shape for level in outputs["det"]
    ]
    assert "det_aux" not in network.eval()(torch.rand(1, 3, 64, 64))


def test_the_auxiliary_loss_is_weighted_and_reaches_the_backbone() -> None:
    module = build_module(compose_config(["model=yolov9", "model.size=s"]))
    batch = {"targets": TARGETS}
    outputs = module(torch.rand(2, 3, 64, 64))
    losses, parts, _ = module.task_losses(outputs, batch)
    main, _ = module.loss_fn(outputs["det"], TARGETS)
    auxiliary, _ = module.auxiliary_loss_fn(outputs["det_aux"], TARGETS)
    torch.testing.assert_close(losses["det"], (main + 0.25 * auxiliary) / 2)
    assert {"aux_box", "aux_cls", "aux_dfl"} <= set(parts)
    auxiliary.backward()
    backbone = [p.grad for p in module.network.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in backbone)
    assert all(p.grad is None for p in module.network.heads["det"].parameters())


@pytest.mark.slow
def test_export_drops_the_branch_and_keeps_the_main_head_outputs(tmp_path: Path) -> None:
    cfg = compose_config(["model=yolov9", "data.image_size=64"])
    module = build_module(cfg)
    path = tmp_path / "best.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "datamodule_hyper_parameters": {"image_size": 64},
        },
        path,
    )
    folded = load_folded(export(path)["checkpoint"])
    gelan = build_network({**plain(cfg.model), "auxiliary": None})
    assert folded.auxiliary is None
    assert count_parameters(folded) == count_parameters(gelan)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = module.network.eval()(images)["det"]
        actual = folded(images)["det"]
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_yolor_yolov9_trains_evaluates_exports_and_reports(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["+experiment=yolor_yolov9", *TINY_RUN, "trainer.max_epochs=1", "logger=csv"]
    results = train(compose_config([*overrides, f"output_dir={run}"]))
    assert results["status"] == "finished" and results["experiment"] == "yolor_yolov9"
    assert results["choices"]["implicit"] == "fa:add:vector+pr:mul:vector"
    assert 0 <= results["metrics"]["AP"] <= 1
    gelan = build_network({**plain(compose_config(["model=gelan"]).model), "num_classes": 8})
    cost = results["model"]
    assert cost["params"] > cost["params_folded"] > count_parameters(gelan)  # implicit, branch
    assert cost["params_fused"] == count_parameters(fuse(gelan))
    folded = load_folded(export(run / "checkpoints" / "best.ckpt")["checkpoint"])
    assert count_parameters(folded) == count_parameters(gelan)
    report = write_report([run], tmp_path / "report", resamples=0)
    assert "yolor_yolov9" in report.markdown


def test_yolov9_e_branch_is_not_built_and_says_so() -> None:
    with pytest.raises(ValueError, match="YOLOv9-E's auxiliary branch"):
        yolov9("e")

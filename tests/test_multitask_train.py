"""End to end, multi-task: the Table 3 experiments train with a real Trainer on tiny shapes runs,
validate every task, and record every task's metrics in results.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_train import TINY_RUN

from yolor_lightning.analysis.complexity import count_parameters
from yolor_lightning.config import ConfigValueError, check_values, compose_config
from yolor_lightning.implicit import fold
from yolor_lightning.models import build_yolov4_csp
from yolor_lightning.tasks.evaluation import COCO_STAT_NAMES
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import train

ONE_EPOCH = [*TINY_RUN, "trainer.max_epochs=1", "logger=csv"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def run(tmp_path: Path, *overrides: str) -> dict:
    return train(compose_config([*ONE_EPOCH, *overrides, f"output_dir={tmp_path}"]))


def in_unit_range(value: float) -> bool:
    return 0.0 <= value <= 1.0


@pytest.mark.slow
def test_ijdc_records_detection_and_classification_metrics(cache, tmp_path: Path):
    results = run(tmp_path, "+experiment=ijdc")
    metrics = results["metrics"]
    assert results["choices"]["task"] == "jdc"
    assert results["choices"]["implicit"] == "fa:add:vector+task.cls:add:vector"
    assert all(-1.0 <= metrics[name] <= 1.0 for name in COCO_STAT_NAMES)
    assert in_unit_range(metrics["cls/mAP"]) and in_unit_range(metrics["cls/F1"])
    plain_jdc = build_yolov4_csp("tiny", 8, tasks=("det", "cls"))
    assert results["model"]["params_folded"] == count_parameters(plain_jdc)
    assert results["model"]["params"] > results["model"]["params_folded"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(metrics))


@pytest.mark.slow
def test_jde_with_triplet_loss_records_retrieval_metrics(cache, tmp_path: Path):
    metrics = run(tmp_path, "+experiment=jde", "task.emb.loss=triplet")["metrics"]
    assert "AP" in metrics
    assert in_unit_range(metrics["emb/mAP"]) and in_unit_range(metrics["emb/rank1"])


@pytest.mark.slow
def test_cls_only_has_no_detection_head_and_keeps_the_best_cls_checkpoint(cache, tmp_path: Path):
    results = run(tmp_path, "+experiment=cls_only")
    assert set(results["metrics"]) == {"loss", "cls/mAP", "cls/F1"}
    checkpoint = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)
    monitors = [state.get("monitor") for state in checkpoint["callbacks"].values()]
    assert "val/cls/mAP" in monitors
    assert not any(key.startswith("network.heads.det") for key in checkpoint["state_dict"])


@pytest.mark.slow
def test_ijde_with_identity_cross_entropy_and_uncertainty_weighting_reloads(cache, tmp_path: Path):
    results = run(
        tmp_path,
        "+experiment=ijde",
        "task.emb.loss=id_ce",
        "task.weighting.mode=uncertainty",
    )
    assert not math.isnan(results["metrics"]["emb/mAP"])
    module = UnifiedModule.load_from_checkpoint(results["best_checkpoint"], map_location="cpu")
    classifier = module.identity_classifier
    assert (
        classifier is not None and classifier.linear.out_features == module.hparams.num_identities
    )
    assert module.weighting.log_variances.shape == (2,)
    with (tmp_path / "csv" / "metrics.csv").open() as handle:
        header = handle.readline()
    assert "train/weight_det" in header and "train/emb_loss" in header
    folded = fold(module.network.eval())
    assert count_parameters(folded) == count_parameters(
        build_yolov4_csp("tiny", 8, tasks=("det", "emb"))
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.implicit.task_emb.operator=add"],
            r"model\.implicit\.task_emb\.operator='add' is invalid: implicit site task\.emb sits "
            r"in the emb branch, but the network's tasks are \['det'\]",
        ),
        (["task.targets=[emb]"], r"task\.targets=\['emb'\] is invalid: emb .* needs det"),
        (["task.targets=[det,seg]"], r"task\.targets=\['det', 'seg'\] is invalid"),
        (["+experiment=jde", "task.emb.margin=0"], r"task\.emb\.margin=0"),
    ],
)
def test_bad_multitask_config_names_the_key(overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        check_values(compose_config(overrides))

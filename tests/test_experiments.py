"""Experiment files: one per cell of the paper's tables; each composes, builds and runs, and a
run records its implicit-knowledge choices and its folded cost."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from test_train import TINY_RUN

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.config import check_values, compose_config, plain
from yolor_lightning.models import build_network, build_yolov4_csp
from yolor_lightning.models.dfl_head import REG_MAX
from yolor_lightning.results import implicit_choices
from yolor_lightning.summary import summarize
from yolor_lightning.train import train

EXPERIMENTS = sorted(
    Path(str(path)).stem
    for path in files("yolor_lightning.conf").joinpath("experiment").iterdir()
    if path.name.endswith(".yaml")
)
PAPER_CELLS = {
    "baseline": "none",
    "ifa_add": "fa:add:vector",
    "ifa_mul": "fa:mul:vector",
    "ifa_cat": "fa:concat:vector",
    "ipr_add": "pr:add:vector",
    "ipr_mul": "pr:mul:vector",
    "ifa_mul_star": "fa*:mul:vector",
    "ipr_mul_star": "pr*:mul:vector",
    "ifa_vector": "fa:add:vector",
    "ifa_nn": "fa:add:nn",
    "ifa_mf": "fa:add:mf",
    "yolor_csp": "fa:add:vector+pr:mul:vector",
    "det_only": "none",
    "cls_only": "none",
    "jdc": "none",
    "ijdc": "fa:add:vector+task.cls:add:vector",
    "jde": "none",
    "ijde": "fa:add:vector+task.emb:add:vector",
}
NETWORK_ROWS = {  # GELAN / YOLOv9 (issue 12): experiment -> (model, implicit)
    "gelan": ("gelan", "none"),
    "yolor_gelan": ("gelan", "fa:add:vector+pr:mul:vector"),
    "yolov9": ("yolov9", "none"),
    "yolor_yolov9": ("yolov9", "fa:add:vector+pr:mul:vector"),
    "revcol": ("revcol", "none"),  # RevCol (issue 13)
    "yolor_revcol": ("revcol", "fa:add:vector+pr:mul:vector"),
}
TASKS_OF = {"cls_only": ["cls"], "jdc": ["det", "cls"], "ijdc": ["det", "cls"]}
TASKS_OF |= {"jde": ["det", "emb"], "ijde": ["det", "emb"], "jde_triplet_pk": ["det", "emb"]}


def test_every_cell_of_the_papers_tables_has_an_experiment_file():
    assert set(PAPER_CELLS) | set(NETWORK_ROWS) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_builds_and_runs_forward(name: str):
    cfg = compose_config([f"+experiment={name}"])
    check_values(cfg)
    assert cfg.experiment_name == name
    model = plain(cfg.model)
    if name in PAPER_CELLS:
        assert implicit_choices(model["implicit"])["implicit"] == PAPER_CELLS[name]
    if name in NETWORK_ROWS:
        implicit = implicit_choices(model["implicit"])["implicit"]
        assert (model["name"], implicit) == NETWORK_ROWS[name]
    assert model["tasks"] == TASKS_OF.get(name, ["det"]) == list(cfg.task.targets)
    network = build_network(model).eval()
    with torch.no_grad():
        outputs = network(torch.rand(1, 3, 64, 64))
    assert list(outputs) == model["tasks"]
    grids = [8, 4, 2]
    if "det" in outputs:
        nc = model["num_classes"]
        shapes = {"anchor": [(1, 3, g, g, 5 + nc) for g in grids]}
        shapes["dfl"] = [(1, 4 * REG_MAX + nc, g, g) for g in grids]
        assert [tuple(level.shape) for level in outputs["det"]] == shapes[model["head"]]
    if "cls" in outputs:
        assert outputs["cls"].shape == (1, model["num_classes"])
    if "emb" in outputs:
        shapes = [(1, model["embedding_dim"], g, g) for g in grids]
        assert [tuple(level.shape) for level in outputs["emb"]] == shapes


def test_implicit_choices_list_enabled_sites_with_their_paper_names():
    choices = implicit_choices(
        {
            "fa": {"operator": None, "prior": "vector"},
            "fa_star": {"operator": "mul", "prior": "mf"},
            "pr": {"operator": "add", "prior": "nn"},
        }
    )
    assert choices == {
        "sites": {
            "fa*": {"operator": "mul", "prior": "mf"},
            "pr": {"operator": "add", "prior": "nn"},
        },
        "implicit": "fa*:mul:mf+pr:add:nn",
    }
    assert implicit_choices(None) == {"sites": {}, "implicit": "none"}


def test_summary_of_full_size_yolor_csp_folds_to_the_baseline_cost():
    full = ["model.size=full", "data.num_classes=80", "data.image_size=640"]
    yolor = summarize(compose_config(["+experiment=yolor_csp", *full]))
    baseline = summarize(compose_config(["+experiment=baseline", *full]))
    assert yolor["implicit"] == "fa:add:vector+pr:mul:vector"
    assert 0 < yolor["params"] - baseline["params"] < baseline["params"] / 10_000
    assert (yolor["params_folded"], yolor["gflops_folded"]) == (
        baseline["params"],
        baseline["gflops"],
    )
    assert (baseline["params_folded"], baseline["gflops_folded"]) == (
        baseline["params"],
        baseline["gflops"],
    )


@pytest.mark.slow
def test_ifa_mul_run_records_the_choices_and_the_folded_cost(tmp_path: Path):
    overrides = ["+experiment=ifa_mul", *TINY_RUN, "trainer.max_epochs=1", "logger=csv"]
    results = train(compose_config([*overrides, f"output_dir={tmp_path}"]))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert written["experiment"] == "ifa_mul"
    assert written["choices"]["sites"] == {"fa": {"operator": "mul", "prior": "vector"}}
    assert written["choices"]["implicit"] == "fa:mul:vector"
    baseline = build_yolov4_csp("tiny", 8)
    cost = written["model"]
    assert cost["params_folded"] == count_parameters(baseline) < cost["params"]
    assert cost["gflops_folded"] == pytest.approx(count_gflops(baseline, 128), rel=1e-12)
    assert written["epochs"] == 1

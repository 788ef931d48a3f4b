"""Sweep recipes (conf/sweep/) expanded by Hydra's own sweeper, and a sweep run end to end: a
recipe with DDP in every job (Lightning re-launches the script for rank 1), a failed job that
does not stop the others, one W&B run per job, and the report."""

from __future__ import annotations

import csv
import json
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from cli_runs import STEPS_PER_EPOCH, TINY, offline_environment, run
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from wandb_records import offline_runs

from yolor_lightning.config import check_values, plain, register_schemas
from yolor_lightning.implicit import PRIORS
from yolor_lightning.models.sites import SITE_OPERATORS
from yolor_lightning.report import write_report
from yolor_lightning.results import implicit_choices


def group_options(group: str) -> list[str]:
    folder = files("yolor_lightning.conf").joinpath(group)
    return sorted(Path(str(p)).stem for p in folder.iterdir() if p.name.endswith(".yaml"))


SWEEPS = group_options("sweep")
EXPERIMENTS = group_options("experiment")


def compose_multirun(overrides: list[str]) -> DictConfig:
    """The config of ``python -m yolor_lightning -m OVERRIDES``, with its ``hydra`` node."""
    register_schemas()
    with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a command line: each job's overrides."""
    params = compose_multirun(overrides).hydra.sweeper.params or {}
    parsed = OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in params.items()] + overrides
    )
    (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return jobs


def job_configs(sweep: str) -> list[DictConfig]:
    configs = []
    for job in sweep_jobs([f"+sweep={sweep}"]):
        cfg = compose_multirun(job)
        check_values(cfg)
        configs.append(cfg)
    return configs


def implicit_labels(configs: list[DictConfig]) -> set[str]:
    return {implicit_choices(plain(cfg.model.implicit))["implicit"] for cfg in configs}


def test_operators_sweep_runs_each_operator_at_each_site_against_the_baseline():
    configs = job_configs("operators")
    expected = {f"{site}:{op}:vector" for site in ("fa", "pr") for op in SITE_OPERATORS[site]}
    assert implicit_labels(configs) == {"none", *expected}
    assert len(configs) == len(expected) + 1
    assert {cfg.sweep_name for cfg in configs} == {"operators"}


def test_modelling_sweep_runs_each_prior_against_the_baseline():
    configs = job_configs("modelling")
    assert implicit_labels(configs) == {"none", *(f"fa:add:{prior}" for prior in PRIORS)}


def test_sites_sweep_puts_implicit_knowledge_at_each_site():
    labels = implicit_labels(job_configs("sites"))
    sites = {part.split(":")[0] for label in labels - {"none"} for part in label.split("+")}
    assert sites == {"fa", "pr", "fa*", "pr*"}
    assert "none" in labels
    assert "fa:add:vector+pr:mul:vector" in labels  # YOLOR-CSP


def test_tasks_sweep_runs_the_multi_task_experiments():
    configs = job_configs("tasks")
    assert sorted(cfg.experiment_name for cfg in configs) == sorted(
        ["det_only", "cls_only", "jdc", "ijdc", "jde", "ijde"]
    )


def test_techniques_sweep_runs_each_training_technique_alone_against_the_baseline():
    configs = {cfg.experiment_name: cfg for cfg in job_configs("techniques")}
    assert sorted(configs) == sorted(
        ["baseline", "focal", "mixup", "label_smoothing", "group_norm"]
    )
    assert {cfg.sweep_name for cfg in configs.values()} == {"techniques"}
    changed = {
        "focal": "task.loss.fl_gamma",
        "mixup": "data.augment.mixup",
        "label_smoothing": "task.loss.label_smoothing",
        "group_norm": "model.norm",
    }
    baseline = configs["baseline"]
    for name, key in changed.items():
        for other, cfg in configs.items():
            differs = OmegaConf.select(cfg, key) != OmegaConf.select(baseline, key)
            assert differs == (other == name), f"{other}: {key}"


def test_seeds_sweep_combines_with_a_table():
    jobs = sweep_jobs(["+sweep=[modelling,seeds]"])
    assert sorted(job[1] for job in jobs) == sorted(f"seed={seed}" for seed in (0, 1, 2) * 4)
    assert len({job[0] for job in jobs}) == 4  # the modelling table's experiments
    assert compose_multirun(jobs[0]).sweep_name == "modelling"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_command_line_narrows_a_sweep_recipe(sweep: str):
    """A key given on the command line replaces the recipe's values for it (e.g. a subset)."""
    jobs = sweep_jobs([f"+sweep={sweep}", "seed=7"])
    assert jobs and all("seed=7" in job for job in jobs)


def test_glob_sweeps_every_experiment_file():
    register_schemas()
    with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        (glob,) = OverridesParser.create(config_loader=loader).parse_overrides(
            ["+experiment=glob(*)"]
        )
        assert sorted(glob.sweep_string_iterator()) == EXPERIMENTS


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """``+sweep=operators`` narrowed to baseline and ifa_add, each with 2 DDP ranks on CPU, and
    each also with ``trainer.max_epochs=0``, which fails (jobs 0 and 2)."""
    cwd = tmp_path_factory.mktemp("ddp_sweep")
    result = run(
        "yolor_lightning",
        "-m",
        "+sweep=operators",
        "+experiment=baseline,ifa_add",
        "trainer=ddp_cpu",
        "trainer.max_epochs=0,1",
        *TINY,
        cwd=cwd,
        env=offline_environment(tmp_path_factory.getbasetemp() / "cache"),
        check=False,
    )
    return result, cwd


def sweep_folder(cwd: Path) -> Path:
    (folder,) = cwd.glob("multirun/*/*")
    return folder


@pytest.mark.slow
def test_ddp_sweep_writes_one_sweep_folder_and_nothing_else(ddp_sweep):
    _, cwd = ddp_sweep
    assert sorted(p.name for p in cwd.iterdir()) == ["multirun"]
    folder = sweep_folder(cwd)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_each_ddp_job_trains_on_two_ranks_in_its_own_folder(ddp_sweep):
    folder = sweep_folder(ddp_sweep[1])
    for job, experiment in (("1", "baseline"), ("3", "ifa_add")):
        results = json.loads((folder / job / "results.json").read_text())
        assert results["experiment"] == experiment
        assert (results["epochs"], results["steps"]) == (1, STEPS_PER_EPOCH[2])
        assert (folder / job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep_and_the_report_lists_it(ddp_sweep, tmp_path):
    result, cwd = ddp_sweep
    folder = sweep_folder(cwd)
    assert result.returncode != 0
    assert "trainer.max_epochs=0" in result.stderr
    for job in ("0", "2"):
        assert not (folder / job / "results.json").exists()
        assert "trainer.max_epochs=0" in yaml.safe_load(
            (folder / job / ".hydra/overrides.yaml").read_text()
        )

    report = write_report([folder], out=tmp_path)
    assert "## Failed jobs" in report.markdown
    with (tmp_path / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    failed = sorted(Path(row["folders"]).name for row in rows if row["status"] == "failed")
    assert failed == ["0", "2"]
    assert sorted(row["experiment"] for row in rows if row["status"] == "ok") == [
        "baseline",
        "ifa_add",
    ]


@pytest.mark.slow
def test_each_job_is_one_wandb_run_grouped_by_the_sweep(ddp_sweep):
    folder = sweep_folder(ddp_sweep[1])
    for job in ("0", "2"):
        assert not (folder / job / "wandb").exists()
    for job, fa_operator, tags in (
        ("1", None, {"task:det", "implicit:none"}),
        ("3", "add", {"task:det", "site:fa", "operator:add", "prior:vector", "fa:add:vector"}),
    ):
        results = json.loads((folder / job / "results.json").read_text())
        (wandb_run,) = offline_runs(folder / job)
        assert wandb_run.group == "operators"
        assert wandb_run.name == ",".join(results["overrides"])
        assert wandb_run.job_type == "train"
        assert set(wandb_run.tags) == tags
        # The resolved config, filterable by any key.
        assert wandb_run.config["model"]["implicit"]["fa"]["operator"] == fa_operator
        assert wandb_run.config["trainer"]["strategy"] == "ddp"
        assert wandb_run.config["sweep_name"] == "operators"
        # Final metrics and the folded model's cost in the summary.
        assert wandb_run.summary["final/AP"] == pytest.approx(results["metrics"]["AP"])
        for key in ("params", "gflops", "params_folded", "gflops_folded"):
            assert wandb_run.summary[f"model/{key}"] == pytest.approx(results["model"][key])

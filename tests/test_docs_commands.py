"""Every command in README.md and docs/*.md still runs as written: training and evaluation
commands compose (their multirun sweeps expanded by Hydra's sweeper), the tools' arguments are
accepted by their config schemas, and the report runs on a committed sweep folder."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from test_sweeps import sweep_jobs

from yolor_lightning.cli import tool_config
from yolor_lightning.config import check_values, register_schemas
from yolor_lightning.report.__main__ import main as report_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HYDRA_APPS = {"yolor_lightning": "train", "yolor_lightning.evaluate": "evaluate"}
TOOLS = ("summary", "export", "predict", "report", "convert")
NOT_RUN = ("make", "source", "wandb", ".venv/bin/pip", ".venv/bin/jupyter")
"""Commands left alone: set-up, uploads and front ends, not this project's entry points."""
PLACEHOLDER = "placeholder"  # what a <date>, <time>, ... stands for: only composed, never read
SWEEP_FOLDER = "experiments/table4/jobs"  # stands for multirun/<date>/<time> in the report


def commands(page: Path) -> list[str]:
    """The shell commands of a page's ```bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def arguments(command: str) -> tuple[str, list[str]]:
    """``python -m MODULE ARGS`` as (MODULE, ARGS), shell comments and the documentation's
    optional ``[key=value]`` arguments dropped and its ``<placeholders>`` filled in."""
    words = shlex.split(re.sub(r"<[^<>]*>", PLACEHOLDER, command), comments=True)
    assert words[:2] == ["python", "-m"], f"not a python -m command: {command}"
    args = [w for w in words[3:] if not (w.startswith("[") and w.endswith("]"))]
    return words[2], args


ENTRY_POINTS = [
    pytest.param(command, id=f"{page.name}: {command[:70]}")
    for page in PAGES
    for command in commands(page)
    if not command.startswith(NOT_RUN)
]


def test_the_pages_have_commands_and_only_known_ones():
    assert len(ENTRY_POINTS) > 30
    for param in ENTRY_POINTS:
        module, _ = arguments(param.values[0])
        tool = module.removeprefix("yolor_lightning.")
        assert module in HYDRA_APPS or tool in TOOLS, f"unknown entry point {module}"


def first_job(args: list[str]) -> list[str]:
    """The overrides of a multirun's first job. As Hydra does, the command line without its
    sweeps is composed first (it must compose on its own), then the sweeps are split by the
    basic sweeper (``glob`` read from the config groups) and a sweep recipe's
    ``hydra.sweeper.params`` expanded."""
    register_schemas()
    with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        compose("train", overrides=fixed)
        (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return sweep_jobs(jobs[0])[0]


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_documented_command_composes(command: str):
    module, args = arguments(command)
    if module in HYDRA_APPS:
        multirun = "-m" in args
        args = [a for a in args if a != "-m"]
        overrides = first_job(args) if multirun else args
        register_schemas()
        with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
            cfg = compose(HYDRA_APPS[module], overrides=overrides)
        if module == "yolor_lightning":
            check_values(cfg)
    else:
        tool = module.removeprefix("yolor_lightning.")
        if hasattr(importlib.import_module(module), "__path__"):  # a package: its schema
            importlib.import_module(f"{module}.__main__")
        tool_config(module, tool, [a.replace("--json", "summary.format=json") for a in args])


def test_documented_report_command_runs_on_a_sweep_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    command = "python -m yolor_lightning.report folders=multirun/<date>/<time>"
    assert any(command in p.read_text() for p in PAGES)
    _, args = arguments(command.replace("multirun/<date>/<time>", SWEEP_FOLDER))
    report_main([*args, f"out={tmp_path}", "resamples=0"])
    assert "| `ifa_add` | 6 |" in capsys.readouterr().out
    assert (tmp_path / "report.png").stat().st_size > 0

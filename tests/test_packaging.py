"""A regular (non-editable) install finds its configs: conf/ ships as yolor_lightning.conf."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_summary_from_any_directory(tmp_path: Path):
    wheel_dir = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = wheel_dir.glob("yolor_lightning-*.whl")

    # A fresh environment that sees this environment's dependencies through a .pth line (which,
    # unlike a site directory, does not execute the editable install's finder) and holds the
    # package itself only as installed from the wheel.
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir)}))
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(purelib),
            str(wheel),
        ],
        check=True,
    )
    python = env_dir / "bin" / "python"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()

    where = subprocess.run(
        [python, "-c", "import yolor_lightning; print(yolor_lightning.__file__)"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(purelib), where

    summary = subprocess.run(
        [
            python,
            "-m",
            "yolor_lightning.summary",
            "+experiment=baseline",
            "model.size=tiny",
            "--json",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(summary.stdout.strip().splitlines()[-1])
    assert result["experiment"] == "baseline"
    assert result["size"] == "tiny"
    assert isinstance(result["params"], int) and result["params"] > 0
    assert not (workdir / "outputs").exists()

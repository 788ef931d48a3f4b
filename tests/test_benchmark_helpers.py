"""The step benchmarks' shared helpers (benchmarks/step_timing.py) build the default run's module
and optimiser as training does, and time variants in turns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import step_timing


def test_the_default_module_and_its_optimiser_are_built_as_training_builds_them():
    cfg, module, optimizer = step_timing.default_module([])
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(trainable)  # every trainable parameter, once
    assert module.training and optimizer.defaults["foreach"] is True
    assert cfg.data.batch_size == module.hparams.batch_size


def test_interleaved_runs_the_variants_in_turns_and_reports_medians_and_ratios():
    calls: list[str] = []
    seconds = {"a": iter([2.0, 6.0, 4.0]), "b": iter([1.0, 3.0, 1.5])}

    def variant(name: str):
        def measure() -> float:
            calls.append(name)
            return next(seconds[name])

        return measure

    timings = step_timing.interleaved({"a": variant("a"), "b": variant("b")}, rounds=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert timings["a"] == {"seconds": [2.0, 6.0, 4.0], "median_seconds": 4.0, "time_ratio": 1.0}
    assert timings["b"]["median_seconds"] == 1.5
    assert timings["b"]["time_ratio"] == pytest.approx(1.5 / 4.0, abs=1e-3)

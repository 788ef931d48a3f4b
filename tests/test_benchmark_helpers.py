"""The benchmarks' shared helpers: benchmarks/step_timing.py builds the default run's module and
optimiser as training does and times variants in turns; benchmarks/records.py keeps each
benchmark's record where ``--output`` says, whole."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import records
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


def test_a_record_goes_to_the_results_folder_unless_output_names_another_file(tmp_path):
    parser = argparse.ArgumentParser()
    records.add_output_option(parser, "example.json")
    default = parser.parse_args([]).output
    assert default == Path(__file__).parents[1] / "benchmarks" / "results" / "example.json"
    assert parser.parse_args(["--output", str(tmp_path / "b.json")]).output == tmp_path / "b.json"


def test_a_record_is_written_whole_and_replaces_the_previous_one(tmp_path, capsys):
    path = tmp_path / "new" / "record.json"
    records.write_record(path, {"ratio": 1.5, "runs": [1, 2]})
    records.write_record(path, {"ratio": 0.98}, show=False)
    assert json.loads(path.read_text()) == {"ratio": 0.98} == records.read_record(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]  # no temporary left
    printed = capsys.readouterr().out
    assert '"runs"' in printed and printed.count(f"wrote {path}") == 2
    assert records.read_record(tmp_path / "absent.json") == {}


def test_an_unserialisable_record_leaves_the_previous_one(tmp_path):
    path = tmp_path / "record.json"
    records.write_record(path, {"ratio": 1.5}, show=False)
    with pytest.raises(TypeError):
        records.write_record(path, {"ratio": object()})
    assert json.loads(path.read_text()) == {"ratio": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_the_record_keeps_the_command_line_that_ran_the_benchmark(monkeypatch):
    command = ["/any/where/benchmarks/nms_cap.py", "a=b.ckpt", "--caps", "1"]
    monkeypatch.setattr(sys, "argv", command)
    assert records.invocation() == "python benchmarks/nms_cap.py a=b.ckpt --caps 1"

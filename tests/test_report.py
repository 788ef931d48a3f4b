"""The ablation report, on multirun folders laid out as Hydra writes them (no training)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import stats

from yolor_lightning.report import ReportError, write_report
from yolor_lightning.report.__main__ import main
from yolor_lightning.report.statistics import holm, minimum_detectable_effect, t_interval
from yolor_lightning.results import write_results

SHARED = ["trainer.max_epochs=6", "data.batch_size=16"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# AP, AP50 of each seed: the numbers the report must summarise.
BASELINE = {0: (0.340, 0.582), 1: (0.352, 0.590)}
IFA_MUL = {0: (0.361, 0.601), 1: (0.349, 0.597)}


def write_job(
    sweep: Path,
    number: int,
    experiment: str,
    seed: int,
    metrics: dict[str, float] | None,
    model: dict[str, float] | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """A Hydra job folder: ``.hydra/`` always, ``results.json`` when ``metrics`` is given."""
    folder = sweep / str(number)
    overrides = [f"+experiment={experiment}", *SHARED, *extra, f"seed={seed}"]
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"experiment_name": experiment, "seed": seed})
    )
    if metrics is not None:
        write_results(
            folder,
            {
                "experiment": experiment,
                "overrides": overrides,
                "choices": {
                    "model": "yolov4_csp",
                    "size": "tiny",
                    "task": "det",
                    "data": "shapes",
                    "seed": seed,
                },
                "metrics": metrics,
                "model": model or {"params": 1300229, "gflops": 0.528769024, "image_size": 256},
                "data": {"skipped": {"train": 0, "val": 0}},
                "epochs": 6,
                "steps": 900,
                "fit_seconds": 723.6,
                "best_checkpoint": str(folder / "checkpoints" / "best.ckpt"),
                "config": {"experiment_name": experiment, "seed": seed},
            },
        )
    return folder


def coco_metrics(ap: float, ap50: float) -> dict[str, float]:
    """All of results.json's metrics; AP75 and the size splits derived from AP."""
    return {
        "AP": ap,
        "AP50": ap50,
        "AP75": ap + 0.03,
        "APs": ap - 0.01,
        "APm": ap + 0.05,
        "APl": ap - 0.02,
        "AR1": 0.37,
        "AR10": 0.58,
        "AR100": 0.62,
        "ARs": 0.59,
        "ARm": 0.65,
        "ARl": 0.60,
        "loss": 0.32,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """``-m +experiment=baseline,ifa_mul seed=0,1`` with one more ifa_mul job that crashed."""
    root = tmp_path / "multirun" / "2026-11-23" / "10-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    number = 0
    for experiment, seeds in (("baseline", BASELINE), ("ifa_mul", IFA_MUL)):
        for seed, (ap, ap50) in seeds.items():
            model = {"params": 1300229, "gflops": 0.528769024, "image_size": 256}
            if experiment == "ifa_mul":
                model |= {"params": 1300741, "params_folded": 1300229, "gflops_folded": 0.528769}
            write_job(root, number, experiment, seed, coco_metrics(ap, ap50), model)
            number += 1
    write_job(root, number, "ifa_mul", 2, metrics=None)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_mean_and_sample_std_match_numpy(sweep: Path):
    report = write_report([sweep])

    for row, seeds in zip(report.table.rows, (BASELINE, IFA_MUL), strict=True):
        ap = np.array([values[0] for values in seeds.values()])
        assert row.metrics["AP"].mean == pytest.approx(ap.mean())
        assert row.metrics["AP"].std == pytest.approx(ap.std(ddof=1))
    baseline = read_csv(sweep / "report.csv")[0]
    assert float(baseline["AP50_std"]) == pytest.approx(np.std([0.582, 0.590], ddof=1))
    expected = f"{100 * np.mean([0.340, 0.352]):.1f} ± {100 * np.std([0.340, 0.352], ddof=1):.1f}"
    assert f"| `baseline` | 2 | {expected} |" in report.markdown


def test_delta_is_the_difference_of_means_against_the_baseline(sweep: Path):
    report = write_report([sweep])

    baseline, ifa_mul = report.table.rows
    assert ifa_mul.baseline is baseline
    assert ifa_mul.delta["AP"] == pytest.approx((0.361 + 0.349) / 2 - (0.340 + 0.352) / 2)
    assert ifa_mul.delta["AP50"] == pytest.approx((0.601 + 0.597) / 2 - (0.582 + 0.590) / 2)
    assert baseline.delta == {"AP": 0.0, "AP50": 0.0}
    line = next(line for line in report.markdown.splitlines() if line.startswith("| `ifa_mul`"))
    assert "| +0.9 | +1.3 |" in line


def test_failed_job_is_listed_with_status_failed(sweep: Path, capsys: pytest.CaptureFixture[str]):
    main([f"folders={sweep}"])

    printed = capsys.readouterr().out
    assert "## Failed jobs" in printed
    failed_line = next(line for line in printed.splitlines() if str(sweep / "4") in line)
    assert "`seed=2`" in failed_line and "no results.json" in failed_line
    (failed,) = [row for row in read_csv(sweep / "report.csv") if row["status"] == "failed"]
    assert failed["configuration"] == "ifa_mul"
    assert failed["seeds"] == "2"
    assert failed["folders"] == str(sweep / "4")
    assert failed["reason"] == "no results.json"


def test_results_without_metrics_count_as_failed(sweep: Path):
    write_job(sweep, 5, "ifa_mul", 3, metrics={})

    report = write_report([sweep])

    assert [(f.job.seed, f.job.failure) for f in report.table.failed] == [
        ("2", "no results.json"),
        ("3", "results.json has no metrics"),
    ]


def test_csv_has_one_row_per_configuration_then_one_per_failed_job(sweep: Path):
    write_report([sweep])

    rows = read_csv(sweep / "report.csv")
    assert [(r["status"], r["configuration"], r["n_seeds"]) for r in rows] == [
        ("ok", "baseline", "2"),
        ("ok", "ifa_mul", "2"),
        ("failed", "ifa_mul", "0"),
    ]
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert {f"{metric}_mean", f"{metric}_std"} <= rows[0].keys()
    assert rows[1]["overrides"] == "+experiment=ifa_mul trainer.max_epochs=6 data.batch_size=16"
    assert rows[1]["seeds"] == "0 1"
    assert rows[1]["baseline"] == "baseline"
    assert int(rows[1]["params"]) == 1300741
    assert int(rows[1]["params_folded"]) == 1300229
    assert rows[0]["params_folded"] == ""


def test_folded_cost_columns_appear_when_runs_report_them(sweep: Path):
    markdown = write_report([sweep]).markdown

    header = next(line for line in markdown.splitlines() if line.startswith("| configuration"))
    assert header.endswith("| params | GFLOPs | params (folded) | GFLOPs (folded) |")
    assert "| 1,300,741 | 0.529 | 1,300,229 | 0.529 |" in markdown


def test_shared_overrides_are_stated_once_not_in_every_label(sweep: Path):
    markdown = write_report([sweep]).markdown

    assert "`trainer.max_epochs=6` `data.batch_size=16`" in markdown
    assert "| `ifa_mul` | 2 |" in markdown


def test_png_is_a_valid_image(sweep: Path):
    report = write_report([sweep])

    png = report.paths[2]
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width >= 1000 and height >= 300


def test_two_folders_are_merged(sweep: Path, tmp_path: Path):
    other = tmp_path / "multirun" / "2026-11-24" / "09-00-00"
    for number, seed in enumerate((2, 3)):
        write_job(other, number, "baseline", seed, coco_metrics(0.330 + seed / 100, 0.580))
    out = tmp_path / "report"

    report = write_report([sweep, other], out=out)

    baseline = report.table.rows[0]
    assert baseline.seeds == ["0", "1", "2", "3"]
    assert baseline.metrics["AP"].mean == pytest.approx(np.mean([0.340, 0.352, 0.350, 0.360]))
    assert sorted(path.name for path in out.iterdir()) == ["report.csv", "report.md", "report.png"]


def test_each_configuration_pairs_with_the_baseline_sharing_its_overrides(tmp_path: Path):
    sweep = tmp_path / "sweep"
    runs = [
        ("baseline", ("model.size=tiny",), 0.30),
        ("ifa_mul", ("model.size=tiny", "model.implicit.fa.prior=mf"), 0.32),
        ("baseline", ("model.size=small",), 0.40),
        ("ifa_mul", ("model.size=small", "model.implicit.fa.prior=mf"), 0.43),
        ("ifa_mul", ("model.size=medium",), 0.50),
    ]
    for number, (experiment, extra, ap) in enumerate(runs):
        write_job(sweep, number, experiment, 0, coco_metrics(ap, 0.5), extra=extra)

    rows = write_report([sweep]).table.rows

    assert [row.label for row in rows] == [
        "baseline model.size=tiny",
        "ifa_mul model.size=tiny model.implicit.fa.prior=mf",
        "baseline model.size=small",
        "ifa_mul model.size=small model.implicit.fa.prior=mf",
        "ifa_mul model.size=medium",
    ]
    assert rows[1].baseline is rows[0] and rows[3].baseline is rows[2]
    assert rows[1].delta["AP"] == pytest.approx(0.02)
    assert rows[3].delta["AP"] == pytest.approx(0.03)
    assert rows[4].baseline is None and rows[4].delta == {}


def test_one_seed_shows_its_value_without_spread(tmp_path: Path):
    write_job(tmp_path / "run", 0, "baseline", 0, coco_metrics(0.34, 0.58))

    report = write_report([tmp_path / "run"])

    assert report.table.rows[0].metrics["AP"].std is None
    assert "| `baseline` | 1 | 34.0 | 58.0 |" in report.markdown
    assert read_csv(report.paths[1])[0]["AP_std"] == ""


def test_multi_task_metrics_get_their_own_columns(tmp_path: Path):
    for seed, top1 in enumerate((0.81, 0.85)):
        metrics = coco_metrics(0.34, 0.58) | {"cls/top1": top1, "emb/rank1": 0.7}
        write_job(tmp_path, seed, "baseline", seed, metrics)

    report = write_report([tmp_path])

    assert report.table.metric_names[-2:] == ("cls/top1", "emb/rank1")
    expected = f"{np.mean([0.81, 0.85]):.3f} ± {np.std([0.81, 0.85], ddof=1):.3f}"
    assert f"| {expected} | 0.700 ± 0.000 |" in report.markdown
    assert "cls/top1_mean" in read_csv(report.paths[1])[0]


def test_runs_without_ap_are_tabulated_and_left_out_of_the_chart(tmp_path: Path):
    write_job(tmp_path, 0, "baseline", 0, {"cls/top1": 0.8, "loss": 0.3})

    report = write_report([tmp_path])

    assert report.table.metric_names == ("cls/top1",)
    assert "| `baseline` | 1 | 0.800 | baseline |" in report.markdown
    assert report.paths[2].read_bytes()[:8] == PNG_SIGNATURE


def test_without_a_baseline_row_delta_is_left_empty(tmp_path: Path):
    write_job(tmp_path, 0, "ifa_mul", 0, coco_metrics(0.34, 0.58))

    report = write_report([tmp_path])

    assert "No `baseline` configuration: no Δ column." in report.markdown
    assert "Δ AP" not in report.markdown
    assert read_csv(report.paths[1])[0]["delta_AP"] == ""


def test_baseline_can_be_named(sweep: Path):
    report = write_report([sweep], baseline="ifa_mul")

    baseline, ifa_mul = report.table.rows
    assert baseline.baseline is ifa_mul
    assert baseline.delta["AP"] == pytest.approx((0.340 + 0.352) / 2 - (0.361 + 0.349) / 2)
    assert "Δ: difference of the mean AP against `ifa_mul`" in report.markdown


def test_unknown_baseline_name_lists_the_configurations(sweep: Path):
    with pytest.raises(
        ReportError, match=r"--baseline 'ifa_add' matches no configuration.*'ifa_mul'"
    ):
        write_report([sweep], baseline="ifa_add")


def test_experiments_keeps_one_table_of_a_larger_sweep(sweep: Path, tmp_path: Path):
    """Table 6 from a sweep that also holds other rows: only the named experiments' jobs."""
    write_job(sweep, 10, "ifa_add", 0, coco_metrics(0.300, 0.550))
    write_job(sweep, 11, "ifa_add", 1, coco_metrics(0.310, 0.560))
    out = tmp_path / "table"

    main([f"folders=[{sweep}]", f"out={out}", "experiments=[baseline,ifa_add]", "resamples=0"])

    rows = read_csv(out / "report.csv")
    assert [row["configuration"] for row in rows] == ["baseline", "ifa_add"]  # no ifa_mul
    assert float(rows[1]["AP_mean"]) == pytest.approx((0.300 + 0.310) / 2)


def test_experiments_naming_one_without_jobs_lists_those_there(sweep: Path):
    with pytest.raises(ReportError, match=r"no job of ifa_nn under .*there: baseline, ifa_mul"):
        write_report([sweep], experiments=["baseline", "ifa_nn"])


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(SystemExit, match=f"no results under {empty}"):
        main([f"folders={empty}"])


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ReportError, match=f"folder not found: {tmp_path / 'nowhere'}"):
        write_report([tmp_path / "nowhere"])


def test_only_failed_jobs_is_a_clear_error_listing_them(tmp_path: Path):
    write_job(tmp_path, 0, "baseline", 0, metrics=None)

    with pytest.raises(ReportError, match=r"no finished runs under .*1 failed jobs: .*no results"):
        write_report([tmp_path])


def test_command_line_prints_the_table_and_the_paths(sweep: Path, tmp_path: Path):
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "yolor_lightning.report", f"folders=[{sweep}]", f"out={out}"],
        capture_output=True,
        text=True,
        check=True,
    )

    assert "# Ablation report" in completed.stdout
    assert "| `ifa_mul` | 2 |" in completed.stdout
    for name in ("report.md", "report.csv", "report.png"):
        assert f"wrote {out / name}" in completed.stdout


# --- Bad jobs: listed as failed with the reason, the report goes on --------------------------


def failure_of(report, folder: Path) -> str:
    (job,) = [f.job for f in report.table.failed if f.job.folder == folder]
    return job.failure


def test_truncated_results_json_is_a_failed_job_and_the_report_goes_on(sweep: Path):
    folder = write_job(sweep, 5, "ifa_mul", 3, coco_metrics(0.5, 0.7))
    text = (folder / "results.json").read_text()
    (folder / "results.json").write_text(text[: len(text) // 2])

    report = write_report([sweep])

    assert failure_of(report, folder).startswith("unreadable results.json: ")
    assert [row.seeds for row in report.table.rows] == [["0", "1"], ["0", "1"]]
    line = next(line for line in report.markdown.splitlines() if str(folder) in line)
    assert "unreadable results.json" in line


def test_results_json_that_is_not_utf8_or_not_an_object_is_a_failed_job(sweep: Path):
    binary = write_job(sweep, 5, "ifa_mul", 3, coco_metrics(0.5, 0.7))
    (binary / "results.json").write_bytes(b"\xff\xfe\x00garbage")
    listed = write_job(sweep, 6, "ifa_mul", 4, coco_metrics(0.5, 0.7))
    (listed / "results.json").write_text("[1, 2]\n")

    report = write_report([sweep])

    assert failure_of(report, binary).startswith("unreadable results.json: ")
    assert failure_of(report, listed) == "results.json holds a list, not an object"


def test_a_nan_baseline_run_never_replaces_the_real_baseline(sweep: Path):
    folder = write_job(sweep, 5, "baseline", 2, coco_metrics(0.5, 0.7))
    text = (folder / "results.json").read_text()
    (folder / "results.json").write_text(text.replace('"AP": 0.5', '"AP": NaN'))
    inf = write_job(sweep, 6, "baseline", 3, coco_metrics(0.5, 0.7))
    text = (inf / "results.json").read_text()
    (inf / "results.json").write_text(text.replace('"AP50": 0.7', '"AP50": Infinity'))

    report = write_report([sweep])

    baseline, ifa_mul = report.table.rows
    assert baseline.seeds == ["0", "1"]
    assert baseline.metrics["AP"].mean == pytest.approx((0.340 + 0.352) / 2)
    assert ifa_mul.delta["AP"] == pytest.approx((0.361 + 0.349) / 2 - (0.340 + 0.352) / 2)
    assert failure_of(report, folder) == "results.json has non-finite metrics: AP"
    assert failure_of(report, inf) == "results.json has non-finite metrics: AP50"
    table = [line for line in report.markdown.splitlines() if line.startswith("| `")]
    assert not any("nan" in line for line in table[:2])


def test_a_run_that_recorded_its_failure_is_listed_with_its_reason(sweep: Path):
    folder = write_job(sweep, 5, "baseline", 2, metrics=None)
    (folder / "results.json").write_text(
        '{"status": "failed", "failure": "non-finite loss at step 3 (box)", "experiment": '
        '"baseline", "overrides": ["+experiment=baseline", "seed=2"]}\n'
    )

    report = write_report([sweep])

    assert failure_of(report, folder) == "run failed: non-finite loss at step 3 (box)"
    assert report.table.rows[0].seeds == ["0", "1"]


def test_unreadable_hydra_folder_is_a_failed_job_unless_results_name_the_run(sweep: Path):
    broken = write_job(sweep, 5, "ifa_mul", 3, metrics=None)
    (broken / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    finished = write_job(sweep, 6, "ifa_mul", 4, coco_metrics(0.36, 0.6))
    (finished / ".hydra" / "config.yaml").write_bytes(b"\xff\xfe: [")

    report = write_report([sweep])

    reason = failure_of(report, broken)
    assert reason.startswith("no results.json; unreadable .hydra/: ")
    assert report.table.rows[1].seeds == ["0", "1", "4"]


# --- Paired comparison -------------------------------------------------------------------------


def test_pairs_by_seed_and_lists_the_unpaired_runs(sweep: Path):
    lonely = write_job(sweep, 5, "baseline", 7, coco_metrics(0.33, 0.58))

    report = write_report([sweep], resamples=0)

    (comparison,) = report.comparisons
    assert comparison.row.label == "ifa_mul" and comparison.row.baseline.label == "baseline"
    assert [(p.seed, p.delta) for p in comparison.pairs] == [
        ("0", pytest.approx(0.361 - 0.340)),
        ("1", pytest.approx(0.349 - 0.352)),
    ]
    assert [(u.seed, u.job.folder, u.reason) for u in comparison.unpaired] == [
        ("7", lonely, "no run with this seed on the other side")
    ]
    assert "## Unpaired runs" in report.markdown
    assert f"| `ifa_mul` | 7 | `{lonely}` | no run with this seed on the other side |" in (
        report.markdown
    )


def test_two_pairs_are_not_resolved_and_report_their_mde(sweep: Path):
    report = write_report([sweep], resamples=0)

    (comparison,) = report.comparisons
    deltas = np.array([0.361 - 0.340, 0.349 - 0.352])
    scipy_interval = stats.ttest_rel([0.361, 0.349], [0.340, 0.352]).confidence_interval()
    assert comparison.interval == pytest.approx((scipy_interval.low, scipy_interval.high))
    # Δ = (2.1, -0.3) points: the 4 sign patterns sum to ±1.8 and ±2.4, all >= |1.8|.
    assert comparison.p_sign_flip == 1.0
    assert comparison.p_sign_flip_holm == 1.0 and comparison.won == 0.5
    assert comparison.verdict == "not resolved"
    spread = deltas.std(ddof=1)
    assert comparison.mde == pytest.approx(minimum_detectable_effect(spread, 2, 0.05))
    line = next(line for line in report.markdown.splitlines() if line.startswith("| `ifa_mul` | `"))
    assert "| 2 | 0:+2.10 1:-0.30 | +0.90 [" in line and "| not resolved |" in line
    row = read_csv(report.paths[1])[1]
    assert row["verdict"] == "not resolved" and row["pairs"] == "2"
    assert float(row["ci_low"]) == pytest.approx(scipy_interval.low)
    assert row["eval_std"] == ""


def test_clear_effects_are_better_and_worse_after_holm(tmp_path: Path):
    """Six seeds; ifa_mul gains ~2 points every seed, ipr_mul loses ~2, ifa_add is noise."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.34, 0.02, 6)
    shifts = {"ifa_mul": 0.02, "ipr_mul": -0.02, "ifa_add": 0.0}
    number = 0
    for seed, ap in enumerate(base):
        write_job(tmp_path, number, "baseline", seed, coco_metrics(ap, 0.5))
        number += 1
        for experiment, shift in shifts.items():
            noise = rng.normal(0, 0.002 if shift else 0.01)
            write_job(tmp_path, number, experiment, seed, coco_metrics(ap + shift + noise, 0.5))
            number += 1

    report = write_report([tmp_path], resamples=0)

    verdicts = {c.row.label: c.verdict for c in report.comparisons}
    assert verdicts == {"ifa_mul": "better", "ipr_mul": "worse", "ifa_add": "not resolved"}
    p_t = [c.p_t for c in report.comparisons]
    assert [c.p_t_holm for c in report.comparisons] == pytest.approx(holm(p_t))
    for c in report.comparisons:
        assert c.n == 6 and c.holm_interval == pytest.approx(t_interval(c.deltas, 1 - c.level))
    (noise,) = [c for c in report.comparisons if c.row.label == "ifa_add"]
    assert noise.mde == pytest.approx(
        minimum_detectable_effect(noise.deltas.std(ddof=1), 6, noise.level)
    )


def test_runs_pair_only_within_one_environment(sweep: Path):
    intel = {"cpu": "Intel(R) Xeon(R) Processor", "torch": "2.14.1", "torch_threads": 1}
    amd = intel | {"cpu": "AMD EPYC"}
    # folders 0, 1: baseline seeds 0, 1 (Intel); 2, 3: ifa_mul seeds 0, 1 (AMD, Intel)
    for folder, environment in ((0, intel), (1, intel), (2, amd), (3, intel)):
        results = json.loads((sweep / str(folder) / "results.json").read_text())
        write_results(sweep / str(folder), results | {"environment": environment})
    amd_baseline = write_job(sweep, 5, "baseline", 0, coco_metrics(0.300, 0.55))
    results = json.loads((amd_baseline / "results.json").read_text())
    write_results(amd_baseline, results | {"environment": amd})
    second = write_job(sweep, 6, "baseline", 1, coco_metrics(0.310, 0.55))  # no environment

    report = write_report([sweep], resamples=0)

    (comparison,) = report.comparisons
    assert [(p.seed, p.run.folder, p.baseline.folder) for p in comparison.pairs] == [
        ("0", sweep / "2", amd_baseline),
        ("1", sweep / "3", sweep / "1"),
    ]
    assert comparison.pairs[0].delta == pytest.approx(0.361 - 0.300)
    assert [(u.seed, u.job.folder, u.reason) for u in comparison.unpaired] == [
        ("1", second, "second run of seed 1"),
        (
            "0",
            sweep / "0",
            "the other side ran this seed in another environment "
            "(cpu: Intel(R) Xeon(R) Processor / AMD EPYC)",
        ),
    ]
    assert "the same numerics environment" in report.markdown

"""Seed-to-seed spread of the default recipe and of candidate budgets (issue: ablations that tell
an effect from noise).

    python benchmarks/seed_variance.py CANDIDATE [CANDIDATE ...] [--seeds 0 1 2 3 4 5]
        [--parallel 2] [--out DIR] [--source CHECKOUT] [--output FILE] [--summarise-only]

A candidate is a name below or ``experiment=NAME``: the default recipe with an experiment file
(``+experiment=NAME``), so that an ablation table's rows run with the same protocol and their
folders feed ``python -m yolor_lightning.report``.

Runs every seed of each candidate recipe as a real training run (``python -m yolor_lightning``,
two processes side by side with one torch thread each: the fastest use of a 2-core machine),
then summarises each candidate: per seed the final AP / AP50 (of the checkpoint results.json
evaluates: the best epoch's or the last), the last epoch's AP (the final EMA weights, no
best-of-epochs pick) and the validation AP after every validated epoch; over seeds the mean and
sample standard deviation. Results are merged, candidate by candidate, into ``--output``
(``benchmarks/results/seed_variance.json``, the recorded seed study, unless given: a study of
other seeds or commits names its own file, so that it does not replace the recorded one).
``--source`` runs the training code of another checkout (e.g. a ``git worktree`` of the commit
under study, so that edits made meanwhile do not change a study half-way).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from records import add_output_option, read_record, write_record

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}

# One loader worker per process, so that two runs side by side do not oversubscribe the cores.
SIDE_BY_SIDE = ["data.num_workers=1"]

EARLIER_EVALUATION = [
    "data.shapes.num_val=300",
    "trainer.check_val_every_n_epoch=1",
    "callbacks.checkpoint.evaluate=best",
]

CANDIDATES: dict[str, list[str]] = {
    # the default recipe as it is now (shapes_cpu: bf16 where the CPU has it, 1,000 validation
    # images every second epoch, the final EMA weights evaluated)
    "default": SIDE_BY_SIDE,
    # the earlier default recipe (256 px, 6 epochs, lr 0.04, 300 validation images every epoch,
    # the best epoch evaluated), in fp32 and in bfloat16 mixed precision, paired seed by seed
    "today": [*SIDE_BY_SIDE, "trainer.precision=32-true", *EARLIER_EVALUATION],
    "today_bf16": [*SIDE_BY_SIDE, "trainer.precision=bf16-mixed", *EARLIER_EVALUATION],
    # a cheaper step (192 px, bf16) buys twice the epochs, so that runs end nearer their plateau;
    # a 1,000-image validation split for less evaluation noise, validated every third epoch
    "plateau": [
        "trainer.precision=bf16-mixed",
        "data.num_workers=1",
        "data.image_size=192",
        "trainer.max_epochs=12",
        "trainer.check_val_every_n_epoch=3",
        "data.shapes.num_val=1000",
        "callbacks.checkpoint.evaluate=best",
    ],
    # screening the learning speed per step (classification is the slowest loss to fall)
    "cls4": [
        *SIDE_BY_SIDE,
        "trainer.precision=bf16-mixed",
        *EARLIER_EVALUATION,
        "task.loss.cls_gain=4.0",
    ],
    "lr08": [
        *SIDE_BY_SIDE,
        "trainer.precision=bf16-mixed",
        *EARLIER_EVALUATION,
        "task.optimizer.lr=0.08",
        "task.schedule.warmup_epochs=2.0",
    ],
}


def overrides_of(candidate: str) -> list[str]:
    if candidate.startswith("experiment="):
        return [*SIDE_BY_SIDE, f"+{candidate}"]
    return CANDIDATES[candidate]


def candidate_name(value: str) -> str:
    if value in CANDIDATES or value.startswith("experiment="):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: a candidate is one of {sorted(CANDIDATES)} or experiment=NAME"
    )


def run_seed(candidate: str, seed: int, out: Path, source: Path, run: bool = True) -> dict:
    folder = out / candidate.replace("=", "-") / f"seed{seed}"
    if not (folder / "results.json").is_file():
        if not run:
            return {"seed": seed, "failed": "not run (--summarise-only)"}
        command = [
            sys.executable, "-m", "yolor_lightning", *overrides_of(candidate), f"seed={seed}",
            f"hydra.run.dir={folder}", "callbacks.progress_bar=null",
        ]  # fmt: skip
        # the run's console goes to a file beside its folder, not to a pipe: a run whose study
        # is stopped then still finishes and writes its results.json
        console = folder.parent / f"seed{seed}.console.log"
        console.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with console.open("w") as log:
            finished = subprocess.run(
                command, cwd=source, env=os.environ | ONE_THREAD, stdout=log, stderr=log
            )
        if finished.returncode != 0:
            return {"seed": seed, "failed": console.read_text()[-2000:]}
        (folder / "wall_seconds").write_text(f"{time.perf_counter() - started:.1f}\n")
    return summarise_seed(folder, seed)


def summarise_seed(folder: Path, seed: int) -> dict:
    results = json.loads((folder / "results.json").read_text())
    if results.get("status") == "failed":
        return {"seed": seed, "failed": results["failure"]}
    with open(folder / "csv" / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/AP") and row.get("epoch")]
    by_epoch = {int(row["epoch"]): float(row["val/AP"]) for row in rows}
    wall = folder / "wall_seconds"
    return {
        "seed": seed,
        "AP": results["metrics"]["AP"],
        "AP50": results["metrics"]["AP50"],
        "evaluated_checkpoint": results.get("evaluated_checkpoint", "best"),
        "last_epoch_AP": by_epoch[max(by_epoch)],
        "AP_per_epoch": [round(by_epoch[epoch], 4) for epoch in sorted(by_epoch)],
        "fit_seconds": results["fit_seconds"],
        "wall_seconds": float(wall.read_text()) if wall.is_file() else None,
    }


def spread(values: list[float]) -> dict:
    """Mean, sample deviation and range of the finished seeds' values, in points; reported as
    failed where no seed finished."""
    if not values:
        return {"failed": "no seed of the candidate finished"}
    return {
        "mean": round(100 * statistics.fmean(values), 2),
        "std": round(100 * statistics.stdev(values), 2) if len(values) > 1 else None,
        "min": round(100 * min(values), 2),
        "max": round(100 * max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", type=candidate_name)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("seed_variance_runs"))
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1])
    add_output_option(parser, "seed_variance.json")
    parser.add_argument(
        "--summarise-only", action="store_true", help="summarise the finished runs, start none"
    )
    args = parser.parse_args()
    jobs = [(candidate, seed) for candidate in args.candidates for seed in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        outcomes = list(
            pool.map(
                lambda job: run_seed(
                    *job, args.out.resolve(), args.source, run=not args.summarise_only
                ),
                jobs,
            )
        )
    # read at the end: another invocation may have recorded its candidates meanwhile
    recorded = read_record(args.output)
    for candidate in args.candidates:
        seeds = [
            outcome for (name, _), outcome in zip(jobs, outcomes, strict=True) if name == candidate
        ]
        finished = [s for s in seeds if "failed" not in s]
        recorded[candidate] = {
            "overrides": overrides_of(candidate),
            "seeds": seeds,
            "AP (evaluated checkpoint, points)": spread([s["AP"] for s in finished]),
            "AP of the last epoch (points)": spread([s["last_epoch_AP"] for s in finished]),
            "AP50 (evaluated checkpoint, points)": spread([s["AP50"] for s in finished]),
        }
        print(json.dumps({k: v for k, v in recorded[candidate].items() if k != "seeds"}))
    write_record(args.output, recorded, show=False)


if __name__ == "__main__":
    main()

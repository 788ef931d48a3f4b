"""The lines a finished training run prints last: its headline metrics and where its files are.

Lightning's logs scroll past; these few lines are what a user of ``make run`` reads to know how
good the run was and where to look next (run folder, checkpoint, drawn validation images, the
command that draws predictions on one's own images).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

HEADLINE_METRICS = ("AP", "AP50", "cls/mAP", "emb/mAP", "emb/rank1")
"""The metrics of results.json the summary shows, those the run measured."""


def shown(path: Path | str) -> str:
    """``path`` relative to the working directory when it lies under it (shorter to read and
    to paste), else as it is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def latest_media(media: Path) -> Path | None:
    """The folder of the last validation's pictures (``step_<global step>``), if any."""
    steps = sorted(media.glob("step_*"), key=lambda folder: folder.name)
    return steps[-1] if steps else None


def run_summary(results: Mapping[str, Any], output_dir: Path, media: Path) -> str:
    """The summary of a finished run from its results.json contents: metrics, the run folder,
    the evaluated checkpoint, the last validation's drawn images and the predict command."""
    metrics = results["metrics"]
    measured = ", ".join(
        f"{name} {metrics[name]:.3f}" for name in HEADLINE_METRICS if name in metrics
    )
    lines = [
        f"finished: {measured} (epochs {results['epochs']}, training {results['fit_seconds']} s)",
        f"run folder:  {shown(output_dir)}/  (results.json, csv/metrics.csv, wandb/)",
    ]
    checkpoint = results.get("evaluated_checkpoint")
    if checkpoint:
        lines.append(f"checkpoint:  {shown(checkpoint)}")
    drawn = latest_media(media)
    if drawn is not None:
        lines.append(f"val images:  {shown(drawn)}/  (ground truth green, predictions)")
    if checkpoint and "AP" in metrics:
        lines.append(
            f"predict:     python -m yolor_lightning.predict ckpt={shown(checkpoint)} "
            "source=IMAGE|FOLDER|VIDEO"
        )
    return "\n".join(lines)

"""Predict: load a model, read the frames, write what it finds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolor_lightning.predict.detections import predict_frames
from yolor_lightning.predict.models import load_predictor
from yolor_lightning.predict.sources import read_frames
from yolor_lightning.predict.writers import PredictionWriter


def predict(
    ckpt: str | Path,
    source: str | Path,
    out: str | Path,
    conf: float | None = 0.25,
    iou: float | None = None,
    image_size: int | None = None,
    batch_size: int = 8,
    draw: bool = True,
) -> dict[str, Any]:
    """Run the model ``ckpt`` on ``source`` and write into ``out`` (see :mod:`.writers`).

    ``conf`` (score threshold) and ``iou`` (NMS overlap) replace the model's evaluation
    settings where given; ``conf=None`` keeps the evaluation's threshold (0.001), which gives
    exactly the detections the evaluation scores. Returns the written paths and counts.
    """
    predictor = load_predictor(ckpt, image_size)
    writer = PredictionWriter(Path(out), predictor.categories, drawn=draw)
    for prediction in predict_frames(
        predictor, read_frames(source), batch_size, conf_threshold=conf, iou_threshold=iou
    ):
        writer.add(prediction)
    return {
        **writer.close(),
        "images": len(writer.images),
        "detections": len(writer.annotations),
    }

"""The predict command line (see :mod:`yolor_lightning.predict`)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from yolor_lightning.cli import tool_config
from yolor_lightning.predict.pipeline import predict


@dataclass
class PredictSchema:
    """Types of conf/predict.yaml: a value of the wrong type is refused, naming the key."""

    ckpt: str = MISSING
    source: str = MISSING
    out: str = MISSING
    conf: float | None = 0.25
    iou: float | None = None
    image_size: int | None = None
    batch_size: int = 8
    draw: bool = True


ConfigStore.instance().store(name="predict_schema", node=PredictSchema)


def main(argv: list[str] | None = None) -> None:
    cfg = tool_config("yolor_lightning.predict", "predict", argv)
    written = predict(
        cfg.ckpt, cfg.source, cfg.out, cfg.conf, cfg.iou, cfg.image_size, cfg.batch_size, cfg.draw
    )
    print(f"{written['detections']} detections in {written['images']} images")
    for name in ("coco", "arrays"):
        if name in written:
            print(f"wrote {written[name]}")
    if cfg.draw:
        print(f"drawn images in {cfg.out}")


if __name__ == "__main__":
    main()

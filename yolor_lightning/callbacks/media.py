"""What a run looks like at each validation, beyond its scalars: a fixed panel of validation
images with ground-truth and predicted boxes, and for a network with implicit knowledge its
learned vectors and ``pr`` heatmap; logged to W&B and written into the run folder.

The panel is the first ``num_images`` images of the first validation batch (the validation
order is fixed, so every validation shows the same images). Everything is done at that batch,
while the EMA weights that validation scores are in the network: one extra forward pass of a
few images and two small figures per validation; nothing during the sanity check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import wandb
from lightning.pytorch.loggers import WandbLogger
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.io import write_png

from yolor_lightning.analysis.implicit import find_sites, plot_pr_heatmap, plot_site_vectors
from yolor_lightning.drawing import draw_boxes
from yolor_lightning.tasks.postprocess import non_max_suppression

GROUND_TRUTH = "#00ff00"  # colour of the ground-truth boxes


class ValidationMedia(L.Callback):
    """At each validation, writes ``<folder>/step_<global step>/`` (``val_<i>.png``: ground
    truth in green, predictions with scores of at least ``min_score`` in their class colours;
    ``implicit_vectors.png``; ``pr_heatmap.png``) and logs the same to W&B: ``val/examples``
    (``wandb.Image`` with box data and class labels, toggled per class in the W&B UI),
    ``implicit/vectors`` and ``implicit/pr_heatmap``."""

    def __init__(self, folder: Path, num_images: int = 4, min_score: float = 0.1) -> None:
        self.folder = Path(folder)
        self.num_images = num_images
        self.min_score = min_score

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        folder = self.folder / f"step_{trainer.global_step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        names = _class_names(trainer, pl_module)
        media: dict[str, Any] = {}
        if "det" in pl_module.tasks:
            media["val/examples"] = self._panel(pl_module, batch, names, folder)
        sites = find_sites(pl_module.network)
        if sites:
            media["implicit/vectors"] = _figure(
                plot_site_vectors(pl_module.network), folder, "implicit_vectors"
            )
        head = pl_module.network.heads["det"] if "det" in pl_module.tasks else None
        if any(site.name == "pr" for site in sites) and hasattr(head, "num_anchors"):
            heatmap = plot_pr_heatmap(pl_module.network, names)
            media["implicit/pr_heatmap"] = _figure(heatmap, folder, "pr_heatmap")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and media:
                logger.log_metrics(media, step=trainer.global_step)

    def _panel(
        self, pl_module: L.LightningModule, batch: dict[str, Any], names: list[str], folder: Path
    ) -> list[wandb.Image]:
        images = batch["images"][: self.num_images]
        with torch.no_grad():
            raw = pl_module(images)["det"]
        decoded = pl_module.network.heads["det"].decode([level.float() for level in raw])
        found = non_max_suppression(
            decoded,
            conf_threshold=self.min_score,
            iou_threshold=pl_module.hparams.evaluation["iou_threshold"],
            max_detections=100,
        )
        panel = []
        for index, (image, target, detections) in enumerate(
            zip(images.cpu(), batch["targets"], found, strict=False)
        ):
            drawn = draw_boxes(
                image, target["boxes"].cpu(), target["labels"].cpu(), names, color=GROUND_TRUTH
            )
            detections = {key: value.cpu() for key, value in detections.items()}
            drawn = draw_boxes(
                drawn, detections["boxes"], detections["labels"], names, detections["scores"]
            )
            write_png(drawn, str(folder / f"val_{index}.png"))
            panel.append(
                wandb.Image(
                    image.permute(1, 2, 0).numpy(),
                    boxes={
                        "ground_truth": _box_data(target["boxes"], target["labels"], names),
                        "predictions": _box_data(
                            detections["boxes"], detections["labels"], names, detections["scores"]
                        ),
                    },
                )
            )
        return panel


def _class_names(trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
    names = getattr(trainer.datamodule, "class_names", None)
    return list(names) if names else [str(k) for k in range(pl_module.hparams.model["num_classes"])]


def _box_data(
    boxes: Tensor, labels: Tensor, names: list[str], scores: Tensor | None = None
) -> dict[str, Any]:
    """Boxes as ``wandb.Image`` takes them: pixel positions, class ids, captions, scores."""
    rows = []
    for row, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        x0, y0, x1, y1 = box
        entry = {
            "position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1},
            "domain": "pixel",
            "class_id": int(label),
            "box_caption": names[label],
        }
        if scores is not None:
            entry["scores"] = {"score": float(scores[row])}
            entry["box_caption"] = f"{names[label]} {float(scores[row]):.2f}"
        rows.append(entry)
    return {"box_data": rows, "class_labels": dict(enumerate(names))}


def _figure(figure: Figure, folder: Path, name: str) -> wandb.Image:
    """Save ``figure`` as ``<folder>/<name>.png``; the same picture for W&B."""
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=80)
    return wandb.Image(str(path))

"""The LightningModule of the detection task: loss, optimiser, schedule, COCO evaluation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from yolor_lightning.data.transforms import letterbox_to_original
from yolor_lightning.implicit import Implicit, sparsity_penalty
from yolor_lightning.models import build_yolov4_csp
from yolor_lightning.tasks.evaluation import CocoEvaluator
from yolor_lightning.tasks.loss import YoloLoss
from yolor_lightning.tasks.postprocess import non_max_suppression
from yolor_lightning.tasks.schedule import WarmupCosineSchedule


def split_decay_groups(network: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split parameters into conv weights (decayed), norm weights, biases and implicit knowledge
    (not decayed: implicit vectors are priors in their own right, not weights to shrink)."""
    groups: dict[str, list[nn.Parameter]] = {
        "weights": [],
        "norms": [],
        "biases": [],
        "implicit": [],
    }
    implicit = {id(p) for m in network.modules() if isinstance(m, Implicit) for p in m.parameters()}
    for module in network.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in implicit:
                groups["implicit"].append(parameter)
            elif name == "bias":
                groups["biases"].append(parameter)
            elif isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
                groups["norms"].append(parameter)
            else:
                groups["weights"].append(parameter)
    return groups


class DetectionModule(L.LightningModule):
    """Trains a YOLO network on batches of the detection DataModule and reports COCO mAP."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        schedule: dict[str, Any],
        loss: dict[str, Any],
        evaluation: dict[str, Any],
        batch_size: int,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = build_yolov4_csp(
            model["size"], model["num_classes"], implicit=model.get("implicit")
        )
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        head = self.network.head
        detection_loss = dict(loss)
        self.sparsity_gain = detection_loss.pop("sparsity_gain", 0.0)
        self.loss_fn = YoloLoss(
            anchors=head.anchors,
            strides=head.strides,
            num_classes=model["num_classes"],
            **detection_loss,
        )
        self.evaluator = CocoEvaluator()

    def forward(self, images: Tensor) -> list[Tensor]:
        """Raw per-level predictions of uint8 or [0, 1] float images."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        raw = self(batch["images"])
        total, parts = self.loss_fn(raw, batch["targets"])
        batch_size = len(batch["targets"])
        penalty = sparsity_penalty(self.network)
        if penalty is not None:  # batch-scaled like the detection terms (see YoloLoss)
            total = total + batch_size * self.sparsity_gain * penalty
            parts["sparsity"] = self.sparsity_gain * penalty.detach()
        self.log("train/loss", total / batch_size, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/{name}": value for name, value in parts.items()}, batch_size=batch_size
        )
        if batch["num_skipped"]:
            self.log(
                "data/skipped_unreadable",
                float(batch["num_skipped"]),
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                batch_size=batch_size,
            )
        return total

    def on_fit_start(self) -> None:
        """Log what the dataset validation skipped (``data.skip_bad``), once per split."""
        skipped = getattr(self.trainer.datamodule, "num_skipped", {})
        for logger in self.loggers:
            logger.log_metrics({f"data/skipped_{split}": n for split, n in skipped.items()}, step=0)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        raw = self(batch["images"])
        batch_size = len(batch["targets"])
        total, _ = self.loss_fn(raw, batch["targets"])
        self.log("val/loss", total / batch_size, batch_size=batch_size, sync_dist=True)
        self.evaluator.update(*self.detections_and_ground_truth(raw, batch["meta"]))

    test_step = validation_step

    def detections_and_ground_truth(
        self, raw: list[Tensor], meta: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """NMS detections mapped back to original image pixels, paired with the ground truth."""
        settings = self.hparams.evaluation
        detections = non_max_suppression(
            self.network.head.decode([level.float() for level in raw]),
            conf_threshold=settings["conf_threshold"],
            iou_threshold=settings["iou_threshold"],
            max_detections=settings["max_detections"],
        )
        for detection, image in zip(detections, meta, strict=True):
            detection["boxes"] = letterbox_to_original(
                detection["boxes"], image["scale"], image["pad"], image["orig_size"]
            )
        ground_truth = [{k: v.to(self.device) for k, v in image["gt"].items()} for image in meta]
        return detections, ground_truth

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self._compute_coco("val"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._compute_coco("test"), sync_dist=False)

    def _compute_coco(self, stage: str) -> dict[str, float]:
        stats = self.evaluator.compute()
        self.evaluator.reset()
        return {f"{stage}/{name}": value for name, value in stats.items()}

    def configure_optimizers(self) -> dict[str, Any]:
        settings = self.hparams.optimizer
        schedule = self.hparams.schedule
        groups = split_decay_groups(self.network)
        decay = settings["weight_decay"] * self.hparams.batch_size / settings["nominal_batch_size"]
        optimizer = torch.optim.SGD(
            [
                {"params": groups["weights"], "weight_decay": decay},
                {"params": groups["norms"], "weight_decay": 0.0},
                {"params": groups["biases"], "weight_decay": 0.0, "is_bias": True},
                {"params": groups["implicit"], "weight_decay": 0.0},
            ],
            lr=settings["lr"],
            momentum=settings["momentum"],
            nesterov=settings["nesterov"],
        )
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        scheduler = WarmupCosineSchedule(
            optimizer,
            total_steps=total_steps,
            warmup_steps=round(schedule["warmup_epochs"] * steps_per_epoch),
            final_lr_fraction=schedule["final_lr_fraction"],
            warmup_bias_lr=schedule["warmup_bias_lr"],
            warmup_momentum=schedule["warmup_momentum"],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

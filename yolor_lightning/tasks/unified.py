"""The LightningModule of the unified network: per-task losses weighted into one, the optimiser
and schedule, and each task's validation metrics (COCO mAP, multi-label mAP/F1, retrieval)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from yolor_lightning.data.transforms import letterbox_to_original
from yolor_lightning.implicit import Implicit, sparsity_penalty
from yolor_lightning.models import UnifiedNetwork, build_network
from yolor_lightning.models.fusion import inference_form
from yolor_lightning.models.initialization import initialize
from yolor_lightning.tasks.accumulation import NominalBatchAccumulation
from yolor_lightning.tasks.alignment import Assignment, assigned_cells
from yolor_lightning.tasks.classification import multilabel_loss, multilabel_metrics
from yolor_lightning.tasks.detection_loss import detection_loss_for
from yolor_lightning.tasks.embedding import (
    EMBEDDING_LOSSES,
    EmbeddingRetrieval,
    IdentityClassifier,
    object_embeddings,
    triplet_loss,
)
from yolor_lightning.tasks.evaluation import CocoEvaluator
from yolor_lightning.tasks.finite import NonFiniteError, non_finite
from yolor_lightning.tasks.postprocess import non_max_suppression
from yolor_lightning.tasks.schedule import WarmupCosineSchedule
from yolor_lightning.tasks.targets import LevelTargets
from yolor_lightning.tasks.weighting import TaskWeighting


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


def to_float32(outputs: Any) -> Any:
    """``outputs`` (a tensor, or lists / dicts of them) with every tensor in float32."""
    if isinstance(outputs, Tensor):
        return outputs.float()
    if isinstance(outputs, Mapping):
        return {key: to_float32(value) for key, value in outputs.items()}
    return [to_float32(value) for value in outputs]


class UnifiedModule(L.LightningModule):
    """Trains the unified network on its tasks (`model["tasks"]`: det, cls, emb) from batches of
    the COCO-format DataModule, and validates each task.

    Every task loss is a per-image mean scaled by the batch size, as the official detection loss
    is; `weighting` adds them up (`TaskWeighting`). Metrics: `val/AP...` (det, COCO), `val/cls/mAP`
    and `val/cls/F1` (cls), `val/emb/mAP` and `val/emb/rank1` (emb). `num_identities` sizes the
    identity classifier of `emb["loss"] == "id_ce"` (the DataModule's `num_identities`). Every
    parameter starts from its own stream of `seed` (`models.initialization`), so modules that
    two configurations share start bit-identical.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        schedule: dict[str, Any],
        loss: dict[str, Any],
        evaluation: dict[str, Any],
        batch_size: int,
        channels_last: bool = True,
        cls: dict[str, Any] | None = None,
        emb: dict[str, Any] | None = None,
        weighting: dict[str, Any] | None = None,
        num_identities: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tasks = tuple(model.get("tasks", ("det",)))
        if "emb" in self.tasks and "det" not in self.tasks:
            raise ValueError(
                f"tasks={list(self.tasks)}: emb reads its embeddings at the cells the detection "
                "head assigns to each object, so it trains with det (task=jde)"
            )
        self.network: UnifiedNetwork = build_network({**model, "tasks": self.tasks})
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        head = self.network.heads["det"] if "det" in self.tasks else None
        detection_loss = dict(loss)
        self.sparsity_gain = detection_loss.pop("sparsity_gain", 0.0)
        self.auxiliary_gain = detection_loss.pop("auxiliary_gain", 0.25)
        if head is not None:
            self.loss_fn = detection_loss_for(head, model["num_classes"], detection_loss)
            self.evaluator = CocoEvaluator()
        if self.network.auxiliary is not None:  # PGI: a training-only branch with its own head
            self.auxiliary_loss_fn = detection_loss_for(
                self.network.auxiliary.head, model["num_classes"], detection_loss
            )
        if "cls" in self.tasks:
            self.cls_metrics = multilabel_metrics(model["num_classes"])
        self.identity_classifier: IdentityClassifier | None = None
        if "emb" in self.tasks:
            if emb["loss"] not in EMBEDDING_LOSSES:
                raise ValueError(
                    f"task.emb.loss={emb['loss']!r} is unknown: allowed values are "
                    f"{list(EMBEDDING_LOSSES)}"
                )
            self.retrieval = EmbeddingRetrieval()
            if emb["loss"] == "id_ce":
                if num_identities is None:
                    raise ValueError(
                        "task.emb.loss=id_ce needs num_identities: the DataModule's "
                        "num_identities (the training split's largest identity + 1)"
                    )
                self.identity_classifier = IdentityClassifier(
                    self.network.heads["emb"].dim, num_identities
                )
        weighting = weighting or {"mode": "fixed", "weights": {}}
        self.weighting = TaskWeighting(
            self.tasks,
            weighting["mode"],
            {task: weighting["weights"].get(task, 1.0) for task in self.tasks},
        )
        initialize(self, seed)
        # Set by configure_optimizers (task.optimizer.accumulate_to_nominal).
        self.accumulation: NominalBatchAccumulation | None = None
        self.optimizer_stepped = True  # whether the last batch ended with an optimizer step
        self._evaluated_network: nn.Module | None = None  # set for each validation and test

    def forward(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """The network's outputs (see `UnifiedNetwork`) for uint8 or [0, 1] float images."""
        return self.network(self.network_input(images))

    def network_input(self, images: Tensor) -> Tensor:
        """A batch of images as the network takes it: float in [0, 1], in the trained layout."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def task_losses(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        """Per-task losses (per-image means), their parts for logging, and the validation
        objects' embeddings (emb only) with their identities.

        Always in float32: under mixed precision (``trainer.precision=bf16-mixed`` / ``16-mixed``)
        only the network runs in 16 bits; its outputs are cast up and autocast is off here.
        """
        with torch.autocast(self.device.type, enabled=False):
            return self._float32_task_losses(to_float32(outputs), batch)

    def _float32_task_losses(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        losses: dict[str, Tensor] = {}
        parts: dict[str, Tensor] = {}
        targets = batch["targets"]
        batch_size = max(1, len(targets))
        if "det" in outputs:  # one assignment serves the detection loss and the emb read-out
            assigned = self.loss_fn.assign(outputs["det"], targets)
            total, detection_parts = self.loss_fn(outputs["det"], targets, assigned)
            if "det_aux" in outputs:
                auxiliary, auxiliary_parts = self.auxiliary_loss_fn(outputs["det_aux"], targets)
                total = total + self.auxiliary_gain * auxiliary
                parts |= {f"aux_{name}": value for name, value in auxiliary_parts.items()}
            losses["det"] = total / batch_size
            parts |= detection_parts
        if "cls" in outputs:
            losses["cls"] = multilabel_loss(
                outputs["cls"], batch["image_labels"], self.hparams.cls["label_smoothing"]
            )
        embedded = None
        if "emb" in outputs:
            embedded = self._embed_objects(outputs["emb"], targets, assigned)
            losses["emb"] = self._embedding_loss(*embedded)
        return losses, parts, embedded

    def _embed_objects(
        self,
        maps: list[Tensor],
        targets: list[dict[str, Tensor]],
        assigned: Sequence[LevelTargets] | Assignment,
    ) -> tuple[Tensor, Tensor]:
        """The embedding of each ground-truth object, read at the cells the detection head
        assigned it to (`assigned`; the emb maps share the detection grids), and its identity."""
        if isinstance(assigned, Assignment):  # the dfl head's anchor points, per level
            assigned = assigned_cells(assigned, [level.shape[-2:] for level in maps])
        identities = torch.cat([t["identities"] for t in targets]).to(self.device)
        embeddings, present = object_embeddings(maps, assigned, len(identities))
        return embeddings, identities[present]

    def _embedding_loss(self, embeddings: Tensor, identities: Tensor) -> Tensor:
        settings = self.hparams.emb
        if settings["loss"] == "triplet":
            mining = settings.get("mining", "hard")  # checkpoints older than task.emb.mining
            return triplet_loss(embeddings, identities, settings["margin"], mining)
        classifier = self.identity_classifier
        if not self.training:  # validation objects may have identities training never saw
            known = identities < classifier.num_identities
            embeddings, identities = embeddings[known], identities[known]
        return classifier(embeddings, identities)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if not batch["targets"]:  # every sample was unusable and skipped (data.skip_bad): no step
            return None
        outputs = self(batch["images"])
        losses, parts, _ = self.task_losses(outputs, batch)
        batch_size = len(batch["targets"])
        total = batch_size * self.weighting(losses)
        penalty = sparsity_penalty(self.network)
        if penalty is not None:  # batch-scaled like the task losses
            total = total + batch_size * self.sparsity_gain * penalty
            parts["sparsity"] = self.sparsity_gain * penalty.detach()
        logged = parts | {f"{task}_loss": loss.detach() for task, loss in losses.items()}
        self._stop_unless_finite(total, logged, batch_idx)
        self.log("train/loss", total / batch_size, prog_bar=True, batch_size=batch_size)
        if len(self.tasks) > 1:
            logged |= {f"weight_{task}": w for task, w in self.weighting.factors().items()}
        self.log_dict(
            {f"train/{name}": value for name, value in logged.items()}, batch_size=batch_size
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

    def _stop_unless_finite(
        self, total: Tensor, terms: Mapping[str, Tensor], batch_idx: int
    ) -> None:
        """Raise :class:`NonFiniteError` before the backward pass of a non-finite loss (on every
        rank when any rank has one), naming the step and the terms that are not finite."""
        finite = bool(torch.isfinite(total))
        strategy = self._trainer.strategy if self._trainer is not None else None
        if strategy.reduce_boolean_decision(finite, all=True) if strategy else finite:
            return
        if finite:
            detail = "on another rank"
        else:
            bad = ", ".join(non_finite(terms)) or "none: their weighted sum overflowed"
            detail = f"{total.item()}; non-finite terms: {bad}"
        raise NonFiniteError(
            f"the training loss is not finite at step {self.global_step} (epoch "
            f"{self.current_epoch}, batch {batch_idx}): {detail}. The run stops before this "
            "step's update and saves no checkpoint of it; lower task.optimizer.lr or the loss "
            "gains (task.loss.*)"
        )

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure=None):
        """Step after every batch, or with task.optimizer.accumulate_to_nominal only after the
        batches that close an accumulation interval (the others run forward and backward and
        add their gradients up). ``global_step`` counts batches either way."""
        self.optimizer_stepped = self.accumulation is None or self.accumulation.steps_after(
            self.global_step
        )
        if self.optimizer_stepped:
            optimizer.step(closure=optimizer_closure)
        else:
            optimizer_closure()

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if self.optimizer_stepped:  # else the gradients of this interval are still adding up
            optimizer.zero_grad()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save non-finite weights (the checkpoint's ``state_dict``: the EMA weights
        where EMA is on). Gradients added up in an open accumulation interval are saved too, so
        that a resume continues the interval exactly."""
        bad = non_finite(checkpoint["state_dict"])
        if bad:
            raise NonFiniteError(
                f"{len(bad)} tensors of the weights to save at step {self.global_step} are not "
                f"finite (e.g. {', '.join(bad[:3])}): the run stops without saving them"
            )
        if not self.optimizer_stepped:
            checkpoint["accumulated_gradients"] = {
                name: parameter.grad.clone()
                for name, parameter in self.named_parameters()
                if parameter.grad is not None
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        gradients = checkpoint.get("accumulated_gradients")
        self.optimizer_stepped = gradients is None
        if gradients is not None:
            for name, parameter in self.named_parameters():
                if name in gradients:
                    parameter.grad = gradients[name].to(parameter.device)

    def on_fit_start(self) -> None:
        """Log what the dataset validation skipped (``data.skip_bad``), once per split."""
        skipped = getattr(self.trainer.datamodule, "num_skipped", {})
        for logger in self.loggers:
            logger.log_metrics({f"data/skipped_{split}": n for split, n in skipped.items()}, step=0)

    def on_validation_epoch_start(self) -> None:
        """Evaluate the inference form of the weights in place now (the EMA's: its callback
        swaps them in first): the same outputs as the network's in eval mode, with each batch
        norm and implicit tensor folded into its convolution (0.71-0.75 of the forward's time on a
        CPU, benchmarks/validation_parts.py). Kept out of the module's children, so out of
        every checkpoint."""
        object.__setattr__(self, "_evaluated_network", inference_form(self.network))

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _end_evaluation(self, stage: str) -> None:
        self._evaluated_network = None
        self.log_dict(self._compute_metrics(stage), sync_dist=False)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self._evaluated_network(self.network_input(batch["images"]))
        batch_size = len(batch["targets"])
        losses, _, embedded = self.task_losses(outputs, batch)
        self.log("val/loss", self.weighting(losses), batch_size=batch_size, sync_dist=True)
        if "det" in outputs:
            self.evaluator.update(*self.detections_and_ground_truth(outputs["det"], batch["meta"]))
        if "cls" in outputs:
            self.cls_metrics.update(outputs["cls"].float().sigmoid(), batch["image_labels"].long())
        if embedded is not None:
            self.retrieval.update(*embedded)

    test_step = validation_step

    def detections_and_ground_truth(
        self, raw: list[Tensor], meta: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """NMS detections mapped back to original image pixels, paired with the ground truth.
        The images are suppressed on the process's torch threads (those of evaluation)."""
        settings = self.hparams.evaluation
        detections = non_max_suppression(
            self.network.heads["det"].decode([level.float() for level in raw]),
            conf_threshold=settings["conf_threshold"],
            iou_threshold=settings["iou_threshold"],
            max_detections=settings["max_detections"],
            max_candidates=settings["max_candidates"],
            threads=torch.get_num_threads(),
        )
        for detection, image in zip(detections, meta, strict=True):
            detection["boxes"] = letterbox_to_original(
                detection["boxes"], image["scale"], image["pad"], image["orig_size"]
            )
        ground_truth = [{k: v.to(self.device) for k, v in image["gt"].items()} for image in meta]
        return detections, ground_truth

    def _compute_metrics(self, stage: str) -> dict[str, float]:
        """Every task's metrics over the whole split (gathered from all processes), reset."""
        metrics: dict[str, float] = {}
        if "det" in self.tasks:
            metrics |= self.evaluator.compute()
            self.evaluator.reset()
        if "cls" in self.tasks:
            metrics |= {f"cls/{k}": float(v) for k, v in self.cls_metrics.compute().items()}
            self.cls_metrics.reset()
        if "emb" in self.tasks:
            metrics |= {f"emb/{k}": float(v) for k, v in self.retrieval.compute().items()}
            self.retrieval.reset()
        return {f"{stage}/{name}": value for name, value in metrics.items()}

    def configure_optimizers(self) -> dict[str, Any]:
        settings = self.hparams.optimizer
        schedule = self.hparams.schedule
        groups = split_decay_groups(self.network)
        if self.identity_classifier is not None:
            extra = split_decay_groups(self.identity_classifier)
            groups["weights"] += extra["weights"]
            groups["biases"] += extra["biases"]
        total_batch = self.hparams.batch_size * self.trainer.world_size
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        warmup_steps = max(
            round(schedule["warmup_epochs"] * steps_per_epoch), schedule["min_warmup_steps"]
        )
        self.accumulation = (
            NominalBatchAccumulation(settings["nominal_batch_size"], total_batch, warmup_steps)
            if settings["accumulate_to_nominal"]
            else None
        )
        images_per_step = total_batch * (
            self.accumulation.final_interval if self.accumulation else 1
        )
        decay = settings["weight_decay"] * images_per_step / settings["nominal_batch_size"]
        optimizer = torch.optim.SGD(
            [
                {"params": groups["weights"], "weight_decay": decay},
                {"params": groups["norms"], "weight_decay": 0.0},
                {"params": groups["biases"], "weight_decay": 0.0, "is_bias": True},
                {"params": groups["implicit"], "weight_decay": 0.0},
                {"params": list(self.weighting.parameters()), "weight_decay": 0.0},
            ],
            lr=settings["lr"],
            momentum=settings["momentum"],
            nesterov=settings["nesterov"],
            # torch's CPU default is a Python loop over the tensors. Not `fused`: Lightning
            # refuses gradient clipping under mixed precision with a fused optimizer.
            foreach=True,
        )
        scheduler = WarmupCosineSchedule(
            optimizer,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            decay_interval=steps_per_epoch if schedule["cosine_per_epoch"] else 1,
            final_lr_fraction=schedule["final_lr_fraction"],
            warmup_bias_lr=schedule["warmup_bias_lr"],
            warmup_momentum=schedule["warmup_momentum"],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

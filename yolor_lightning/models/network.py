"""The unified network assembled from named parts: backbone -> neck (the shared explicit
features) -> one head per task, and `build_network`, the one place a model config becomes a
network (training, evaluation, summary, export, analysis, benchmarks)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from yolor_lightning.models.blocks import use_norm
from yolor_lightning.models.registry import (
    AUXILIARY_BRANCHES,
    BACKBONES,
    DETECTION_HEADS,
    NECKS,
)
from yolor_lightning.models.sites import enabled_sites, sites_of
from yolor_lightning.models.task_heads import ClassificationHead, EmbeddingHead

TASKS: tuple[str, ...] = ("det", "cls", "emb")
"""The tasks a network can have a head for: detection, multi-label classification, embedding."""


class UnifiedNetwork(nn.Module):
    """`backbone` -> `neck` -> `heads` (task -> head, all on the neck's maps), and optionally
    a training-only `auxiliary` branch on the backbone's maps (YOLOv9's PGI).

    `forward` returns `{task: output}`: `det` the detection head's raw per-level outputs
    (`heads["det"].decode` turns them into boxes), `cls` the image's class logits `[B, nc]`,
    `emb` per-level embedding maps `[B, embedding_dim, H/s, W/s]`; with the auxiliary branch
    run (in training, or `auxiliary=True`), also `det_aux`, its det head's raw outputs. The
    backbone declares its `out_channels` and `strides`, the neck its `out_channels` (see
    `models.registry`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        heads: Mapping[str, nn.Module],
        auxiliary: nn.Module | None = None,
    ):
        super().__init__()
        for part, attributes in (
            (backbone, ("out_channels", "strides")),
            (neck, ("out_channels",)),
        ):
            missing = [name for name in attributes if not hasattr(part, name)]
            if missing:
                raise TypeError(
                    f"{type(part).__name__} cannot be a part of the network: it does not "
                    f"declare {', '.join(missing)}"
                )
        unknown = [task for task in heads if task not in TASKS]
        if unknown or not heads:
            raise ValueError(f"tasks={list(heads)} is invalid: a non-empty subset of {TASKS}")
        self.backbone = backbone
        self.neck = neck
        self.heads = nn.ModuleDict(heads)
        self.auxiliary = auxiliary

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.backbone.strides)

    def forward(
        self, images: torch.Tensor, auxiliary: bool | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """`auxiliary`: run the auxiliary branch (None: when training and the network has one)."""
        features = self.backbone(images)
        maps = self.neck(features)
        outputs = {task: head(maps) for task, head in self.heads.items()}
        if self.auxiliary is not None and (self.training if auxiliary is None else auxiliary):
            outputs["det_aux"] = self.auxiliary(images, features)
        return outputs

    def without_auxiliary(self) -> UnifiedNetwork:
        """A copy without the auxiliary branch: the network that is deployed."""
        deployed = copy.deepcopy(self)
        deployed.auxiliary = None
        return deployed


def build_heads(
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    tasks: Sequence[str] = ("det",),
    implicit: Mapping[str, Mapping[str, Any]] | None = None,
    embedding_dim: int = 128,
    detection_head: str = "anchor",
) -> dict[str, nn.Module]:
    """One head per task of `tasks` on neck maps of `channels` at `strides`, each with its
    implicit-knowledge sites of `implicit` (site -> options, `models.sites`); `detection_head`
    names the det head's part (anchor | dfl)."""
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks={list(tasks)} is invalid: a non-empty subset of {TASKS}")
    sites = enabled_sites(implicit, tasks)
    heads: dict[str, nn.Module] = {}
    if "det" in tasks:
        heads["det"] = DETECTION_HEADS.build(
            detection_head, channels, num_classes, strides, sites_of("det", sites)
        )
    if "cls" in tasks:
        heads["cls"] = ClassificationHead(channels, num_classes, sites.get("task_cls"))
    if "emb" in tasks:
        heads["emb"] = EmbeddingHead(channels, embedding_dim, sites.get("task_emb"))
    return heads


def build_network(model: Mapping[str, Any]) -> UnifiedNetwork:
    """The network of a model config (`conf/model/*.yaml`, resolved to plain values): the
    registered `backbone` (with the options it registered, e.g. RevCol's `reversible`) and
    `neck` at `size`, and a head per task of `tasks` (default det),
    the det head being the registered `head` (default anchor), with the `implicit` sites, and
    the registered `auxiliary` branch when one is named (it needs det); every Conv block
    normalised by `norm` (bn, gn, syncbn: `models.norms`; default bn).
    A config without parts (a checkpoint from before parts had names) is YOLOv4-CSP's."""
    name = model.get("backbone", "cspdarknet53")
    backbone = BACKBONES.build(name, model["size"], **BACKBONES.options_of(name, model))
    neck = NECKS.build(model.get("neck", "csp_pan"), tuple(backbone.out_channels), model["size"])
    heads = build_heads(
        neck.out_channels,
        backbone.strides,
        model["num_classes"],
        tasks=tuple(model.get("tasks", ("det",))),
        implicit=model.get("implicit"),
        embedding_dim=model.get("embedding_dim", 128),
        detection_head=model.get("head", "anchor"),
    )
    auxiliary = None
    if model.get("auxiliary"):
        if "det" not in heads:
            raise ValueError(f"auxiliary branch {model['auxiliary']!r} needs the det task")
        auxiliary = AUXILIARY_BRANCHES.build(
            model["auxiliary"],
            model["size"],
            backbone.out_channels,
            model["num_classes"],
            backbone.strides,
            model.get("head", "anchor"),
        )
    return use_norm(UnifiedNetwork(backbone, neck, heads, auxiliary), model.get("norm", "bn"))


def output_tensors(outputs: torch.Tensor | Sequence | Mapping) -> list[torch.Tensor]:
    """The tensors of a network output (a tensor, a list of them or a dict of task outputs) in
    order: what comparisons of two networks' outputs iterate over."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    values = outputs.values() if isinstance(outputs, Mapping) else outputs
    return [tensor for value in values for tensor in output_tensors(value)]

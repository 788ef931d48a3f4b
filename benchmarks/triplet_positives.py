"""Why batch-hard triplet does not learn on ``shapes`` (issue 14 §3), measured on the JDE run's
own batches: how many positives a batch holds with ``data.sampler=shuffle`` and ``pk``, and
what the losses do to the untrained network's embeddings; then the same geometry on trained
checkpoints.

    python benchmarks/triplet_positives.py [--parts samplers gradients checkpoints]
        [--batches 8] [--checkpoints NAME=CHECKPOINT ...]

1. **Positives** (no network weights involved beyond the read-out): the first ``--batches``
   training batches of epoch 0 of ``+experiment=jde seed=0`` (Table 3's run: batch 16), for
   each sampler setting, with and without mosaic: objects with an embedding (assigned to a
   detection cell), identities present, the share of objects with a positive (another object
   of their identity in the batch), positives per object and positive pairs; for ``pk``, the
   share of the P x K slots whose identity is still in its sample after augmentation (a
   mosaic keeps about a quarter of the sample's own image).
2. **Geometry at initialisation** (seed 0's untrained network in training mode, same batches):
   the hardest positive and negative distances, the share of objects whose hardest negative is
   closer than their hardest positive, and the batch-hard, semi-hard and id_ce losses along a
   contraction of every embedding towards the batch's mean direction (``e + t * mean``,
   renormalised, t = 0, 1, 4, 100): where batch-hard falls, shrinking the embedding cloud is a
   way down its loss that needs no identity at all.
3. **Gradients at initialisation** (the first 2 ``shuffle`` batches with mosaic): the norm of
   the gradient each loss term sends to the backbone, the neck and the emb head, weighted as in
   training (batch size x ``task.weighting.weights``: det 1, emb 0.1): detection, id_ce,
   batch-hard and semi-hard triplet.
4. **Checkpoints** (``--checkpoints``; a run folder's ``checkpoints/best.ckpt``): the same
   distances and losses on the validation objects (batches of 16 in order), the mean distance
   between all validation embeddings, retrieval mAP, and the run's logged ``train/emb_loss``
   at its first and last logged steps (from ``csv/metrics.csv`` beside ``checkpoints/``).

Writes benchmarks/results/triplet_positives.json (or ``--output``): the parts measured replace
theirs in the file (checkpoints are merged by name), the others stay.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from records import add_output_option, invocation, read_record, write_record
from torch import Tensor

from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.tasks.embedding import (
    EmbeddingRetrieval,
    IdentityClassifier,
    batch_hard_pairs,
    batch_hard_triplet_loss,
    semihard_triplet_loss,
)
from yolor_lightning.train import build_datamodule, build_module

RUN = ["+experiment=jde", "seed=0", "data.num_workers=0", "data.shapes.num_val=300"]
SAMPLERS = {  # name -> overrides (batch 16 as the Table 3 run)
    "shuffle": ["data.sampler=shuffle"],
    "pk_4x4": ["data.sampler=pk", "data.pk.identities=4", "data.pk.instances=4"],
    "pk_8x2": ["data.sampler=pk", "data.pk.identities=8", "data.pk.instances=2"],
    "pk_2x8": ["data.sampler=pk", "data.pk.identities=2", "data.pk.instances=8"],
}
MARGIN = 0.3
SHIFTS = (0.0, 1.0, 4.0, 100.0)


def positives(identities: Tensor) -> dict[str, float]:
    """How many positives the batch's objects have."""
    same = identities[:, None] == identities[None, :]
    others = same.sum(dim=1) - 1
    counts = torch.bincount(identities)
    return {
        "objects": len(identities),
        "identities": int((counts > 0).sum()),
        "share_with_positive": float((others > 0).float().mean()),
        "positives_per_object": float(others.float().mean()),
        "positive_pairs": int((counts * (counts - 1) // 2).sum()),
    }


def geometry(embeddings: Tensor, identities: Tensor) -> dict[str, float]:
    """Hardest positive / negative distances and the losses on L2-normalised embeddings."""
    positive, negative, valid = batch_hard_pairs(embeddings, identities)
    distances = torch.cdist(embeddings, embeddings)
    rows = torch.arange(len(identities))[valid]
    d_positive, d_negative = distances[rows, positive[valid]], distances[rows, negative[valid]]
    off_diagonal = ~torch.eye(len(identities), dtype=torch.bool)
    return {
        "mean_distance": float(distances[off_diagonal].mean()),
        "hardest_positive": float(d_positive.mean()),
        "hardest_negative": float(d_negative.mean()),
        "share_negative_closer": float((d_negative < d_positive).float().mean()),
        "batch_hard": float(batch_hard_triplet_loss(embeddings, identities, MARGIN)),
        "semihard": float(semihard_triplet_loss(embeddings, identities, MARGIN)),
    }


def contraction(
    embeddings: Tensor, identities: Tensor, classifier: IdentityClassifier
) -> dict[str, list[float]]:
    """The losses as every embedding is pulled towards the batch's mean direction."""
    common = F.normalize(embeddings.mean(dim=0), dim=0)
    curves: dict[str, list[float]] = {"mean_distance": [], "batch_hard": [], "semihard": []}
    curves["id_ce"] = []
    for shift in SHIFTS:
        shrunk = F.normalize(embeddings + shift * common, dim=1)
        curves["mean_distance"].append(float(torch.pdist(shrunk).mean()))
        curves["batch_hard"].append(float(batch_hard_triplet_loss(shrunk, identities, MARGIN)))
        curves["semihard"].append(float(semihard_triplet_loss(shrunk, identities, MARGIN)))
        curves["id_ce"].append(float(classifier(shrunk, identities)))
    return curves


def mean_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key means over batches (lists: element-wise), rounded."""
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        if isinstance(first, dict):
            out[key] = mean_of([row[key] for row in rows])
        elif isinstance(first, list):
            out[key] = [
                round(sum(v) / len(v), 4) for v in zip(*(r[key] for r in rows), strict=True)
            ]
        else:
            out[key] = round(sum(row[key] for row in rows) / len(rows), 4)
    return out


@torch.no_grad()
def measure_sampler(overrides: list[str], batches: int) -> dict[str, Any]:
    """Positives, identity survival (pk) and geometry at initialisation over ``batches``."""
    cfg = compose_config([*RUN, "task.emb.loss=id_ce", *overrides])
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule).train()  # batch statistics, as in training
    loader = datamodule.train_dataloader()
    sampler = loader.sampler
    sampler.set_epoch(0)
    rows = []
    for number, batch in zip(range(batches), loader, strict=False):
        _, _, (embeddings, identities) = module.task_losses(module(batch["images"]), batch)
        row: dict[str, Any] = {"positives": positives(identities)}
        if hasattr(sampler, "group"):
            slots = sampler.group(number)
            kept = [
                identity in target["identities"].tolist()
                for (identity, _), target in zip(slots, batch["targets"], strict=True)
            ]
            row["pk_slots_keeping_their_identity"] = sum(kept) / len(kept)
        row["init"] = geometry(embeddings, identities)
        row["contraction"] = contraction(embeddings, identities, module.identity_classifier)
        rows.append(row)
    return mean_of(rows)


def gradient_norms(batches: int = 2, emb_weight: float = 0.1) -> dict[str, dict[str, float]]:
    """Per loss term, the gradient norm on the backbone, neck and emb head (batch means)."""
    cfg = compose_config([*RUN, "task.emb.loss=id_ce", "data.sampler=shuffle"])
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule).train()
    network = module.network
    parts = {
        "backbone": list(network.backbone.parameters()),
        "neck": list(network.neck.parameters()),
        "emb_head": list(network.heads["emb"].parameters()),
    }
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    rows = []
    for _, batch in zip(range(batches), loader, strict=False):
        size = len(batch["targets"])
        losses, _, (embeddings, identities) = module.task_losses(module(batch["images"]), batch)
        terms = {
            "det": size * losses["det"],
            "id_ce": size * emb_weight * losses["emb"],
            "batch_hard": size
            * emb_weight
            * batch_hard_triplet_loss(embeddings, identities, MARGIN),
            "semihard": size * emb_weight * semihard_triplet_loss(embeddings, identities, MARGIN),
        }
        row = {}
        for term, value in terms.items():
            row[term] = {}
            for part, parameters in parts.items():
                grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
                squares = sum(float(g.square().sum()) for g in grads if g is not None)
                row[term][part] = squares**0.5
        rows.append(row)
    return mean_of(rows)


def measure_samplers(batches: int) -> dict[str, Any]:
    """:func:`measure_sampler` for every sampler setting, with and without mosaic."""
    measured = {}
    for name, overrides in SAMPLERS.items():
        for mosaic in (1.0, 0.0):
            key = f"{name}, mosaic {mosaic:g}"
            measured[key] = measure_sampler([*overrides, f"data.augment.mosaic={mosaic}"], batches)
            print(key, json.dumps(measured[key]["positives"]), flush=True)
    return measured


@torch.no_grad()
def measure_checkpoint(path: Path) -> dict[str, Any]:
    """Geometry and retrieval of a trained checkpoint on the validation objects."""
    checkpoint = load_checkpoint(path)
    module = module_from_checkpoint(checkpoint).eval()
    datamodule = build_datamodule(compose_config(RUN))
    datamodule.prepare_data()
    datamodule.setup("validate")
    retrieval = EmbeddingRetrieval()
    rows, everything = [], []
    for batch in datamodule.val_dataloader():
        _, _, (embeddings, identities) = module.task_losses(module(batch["images"]), batch)
        retrieval.update(embeddings, identities)
        everything.append(embeddings)
        rows.append(geometry(embeddings, identities))
    all_embeddings = torch.cat(everything)
    emb = checkpoint["hyper_parameters"]["emb"]
    record = {
        "path": str(path),
        "global_step": checkpoint["global_step"],
        "emb": emb,
        "retrieval": {k: round(float(v), 4) for k, v in retrieval.compute().items()},
        "validation_objects": len(all_embeddings),
        "mean_distance_all": round(float(torch.pdist(all_embeddings).mean()), 4),
        "per_batch": mean_of(rows),
    }
    record |= logged_emb_loss(path.parent.parent / "csv" / "metrics.csv")
    return record


def logged_emb_loss(metrics: Path) -> dict[str, Any]:
    """``train/emb_loss`` at the run's first and last logged steps."""
    if not metrics.is_file():
        return {}
    with metrics.open(newline="") as file:
        logged = [
            (int(row["step"]), float(row["train/emb_loss"]))
            for row in csv.DictReader(file)
            if row.get("train/emb_loss")
        ]
    return {"train_emb_loss": {"first": logged[0], "last": logged[-1], "logged": len(logged)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--checkpoints", nargs="*", default=[], help="NAME=PATH")
    parser.add_argument(
        "--parts", nargs="+", default=["samplers", "gradients", "checkpoints"],
        choices=["samplers", "gradients", "checkpoints"],
    )  # fmt: skip
    add_output_option(parser, "triplet_positives.json")
    arguments = parser.parse_args()
    record = read_record(arguments.output)
    record["commands"] = [
        *record.get("commands", []),
        invocation(),
    ]
    record |= {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "run": RUN,
        "margin": MARGIN,
        "contraction_shifts": list(SHIFTS),
    }
    if "samplers" in arguments.parts:
        record["samplers"] = measure_samplers(arguments.batches)
    if "gradients" in arguments.parts:
        record["gradients_at_init"] = gradient_norms()
        print("gradients", json.dumps(record["gradients_at_init"]), flush=True)
    record.setdefault("checkpoints", {})
    for item in arguments.checkpoints if "checkpoints" in arguments.parts else ():
        name, path = item.split("=", 1)
        record["checkpoints"][name] = measure_checkpoint(Path(path))
        print(name, json.dumps(record["checkpoints"][name]), flush=True)
    write_record(arguments.output, record, show=False)


if __name__ == "__main__":
    main()

"""Per-object embeddings (`emb`): reading them at the assigned cells, their losses (triplet with
batch-hard or semi-hard mining, identity cross-entropy) and retrieval of objects by identity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.retrieval import retrieval_average_precision, retrieval_hit_rate
from torchmetrics.utilities import dim_zero_cat

from yolor_lightning.tasks.alignment import AssignedCells
from yolor_lightning.tasks.targets import LevelTargets

EMBEDDING_LOSSES = ("triplet", "id_ce")
"""The selectable embedding losses (``task.emb.loss``)."""


def object_embeddings(
    maps: Sequence[Tensor], assigned: Sequence[LevelTargets | AssignedCells], num_objects: int
) -> tuple[Tensor, Tensor]:
    """One L2-normalised embedding per ground-truth object: the mean of the embedding maps
    (`[B, D, H, W]` per level) at every cell the object is assigned to on any level.

    Returns the embeddings `[m, D]` and the objects' indices `[m]` (their order in the batch's
    boxes); objects assigned to no cell (no anchor within the size ratio) are left out.
    """
    dim = maps[0].shape[1]
    sums = maps[0].new_zeros(num_objects, dim, dtype=torch.float32)
    counts = torch.zeros(num_objects, device=sums.device)
    for level_map, level in zip(maps, assigned, strict=True):
        if level.target.numel():
            vectors = level_map[level.image, :, level.gy, level.gx].float()
            sums = sums.index_add(0, level.target, vectors)
            counts = counts.index_add(
                0, level.target, torch.ones_like(level.target, dtype=counts.dtype)
            )
    present = (counts > 0).nonzero(as_tuple=True)[0]
    means = sums[present] / counts[present, None]
    return F.normalize(means, dim=1), present


def batch_hard_pairs(embeddings: Tensor, identities: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For every embedding (anchor), the index of its hardest positive (the farthest other
    embedding of the same identity) and hardest negative (the closest one of another identity),
    by Euclidean distance, and whether it has both."""
    with torch.no_grad():
        distances = torch.cdist(embeddings, embeddings)
        same = identities[:, None] == identities[None, :]
        positive = same & ~torch.eye(len(identities), dtype=torch.bool, device=same.device)
        negative = ~same
        hardest_positive = distances.masked_fill(~positive, -math.inf).argmax(dim=1)
        hardest_negative = distances.masked_fill(~negative, math.inf).argmin(dim=1)
        valid = positive.any(dim=1) & negative.any(dim=1)
    return hardest_positive, hardest_negative, valid


def semihard_triplets(embeddings: Tensor, identities: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """FaceNet's semi-hard mining (Schroff et al., 2015): every positive pair ``(a, p)`` with, as
    its negative, the closest embedding of another identity that is farther from ``a`` than
    ``p`` (none farther: the farthest one). Returns the anchor, positive and negative indices
    of every pair whose anchor has a negative; Euclidean distances.

    Unlike the hardest negative, such a negative is never closer than the positive, so shrinking
    every distance (a collapse of the embeddings to one point) raises the loss instead of
    lowering it to the margin."""
    with torch.no_grad():
        distances = torch.cdist(embeddings, embeddings)
        same = identities[:, None] == identities[None, :]
        eye = torch.eye(len(identities), dtype=torch.bool, device=same.device)
        anchors, positives = (same & ~eye).nonzero(as_tuple=True)
        negatives_of = (~same).sum(dim=1)
        keep = negatives_of[anchors] > 0
        anchors, positives = anchors[keep], positives[keep]
        ranked, order = distances.masked_fill(same, math.inf).sort(dim=1)  # negatives first
        farther = torch.searchsorted(
            ranked[anchors], distances[anchors, positives][:, None].contiguous(), right=True
        )[:, 0]
        rank = torch.minimum(farther, negatives_of[anchors] - 1)
    return anchors, positives, order[anchors, rank]


def triplet_hinge(
    embeddings: Tensor, anchors: Tensor, positives: Tensor, negatives: Tensor, margin: float
) -> Tensor:
    """Mean of `max(0, d(a, p) - d(a, n) + margin)` over the given triplets; 0 without any."""
    if not len(anchors):
        return embeddings.sum() * 0.0

    def distance(a: Tensor, b: Tensor) -> Tensor:  # eps: a finite gradient at distance 0
        return ((a - b).square().sum(dim=1) + 1e-12).sqrt()

    chosen = embeddings[anchors]
    gap = distance(chosen, embeddings[positives]) - distance(chosen, embeddings[negatives])
    return F.relu(gap + margin).mean()


def batch_hard_triplet_loss(embeddings: Tensor, identities: Tensor, margin: float) -> Tensor:
    """Mean over anchors with a positive and a negative in the batch of
    `max(0, d(a, hardest p) - d(a, hardest n) + margin)` (Hermans et al., 2017); 0 without any."""
    positive, negative, valid = batch_hard_pairs(embeddings, identities)
    anchors = valid.nonzero(as_tuple=True)[0]
    return triplet_hinge(embeddings, anchors, positive[anchors], negative[anchors], margin)


def semihard_triplet_loss(embeddings: Tensor, identities: Tensor, margin: float) -> Tensor:
    """Mean over every positive pair of `max(0, d(a, p) - d(a, semi-hard n) + margin)`
    (:func:`semihard_triplets`); 0 without any."""
    return triplet_hinge(embeddings, *semihard_triplets(embeddings, identities), margin)


TRIPLET_MINING = {"hard": batch_hard_triplet_loss, "semihard": semihard_triplet_loss}
"""The triplet loss's mining (``task.emb.mining``) and its loss."""


def triplet_loss(embeddings: Tensor, identities: Tensor, margin: float, mining: str) -> Tensor:
    """The triplet loss with ``mining`` (:data:`TRIPLET_MINING`)."""
    if mining not in TRIPLET_MINING:
        raise ValueError(
            f"task.emb.mining={mining!r} is unknown: allowed values are {list(TRIPLET_MINING)}"
        )
    return TRIPLET_MINING[mining](embeddings, identities, margin)


class IdentityClassifier(nn.Module):
    """Identity cross-entropy (the JDE recipe): a linear classifier over the identities of the
    training set, reading the normalised embedding scaled by `sqrt(2) log(n - 1)` so that the
    softmax can become confident. Used by the loss only; not part of the exported network."""

    def __init__(self, dim: int, num_identities: int):
        super().__init__()
        if num_identities < 2:
            raise ValueError(f"identity cross-entropy needs >= 2 identities, got {num_identities}")
        self.num_identities = num_identities
        self.scale = math.sqrt(2) * math.log(num_identities - 1)
        self.linear = nn.Linear(dim, num_identities)

    def forward(self, embeddings: Tensor, identities: Tensor) -> Tensor:
        if not identities.numel():
            return embeddings.sum() * 0.0
        if int(identities.max()) >= self.num_identities:
            raise ValueError(
                f"identity {int(identities.max())} is outside the {self.num_identities} "
                "identities the classifier was built for (the training split's largest identity "
                "+ 1): are the training annotations the ones the model was set up with?"
            )
        return F.cross_entropy(self.linear(self.scale * embeddings), identities)


class EmbeddingRetrieval(Metric):
    """Retrieval of objects by identity: every object queries all the others, ranked by cosine
    similarity; `mAP` is the mean average precision and `rank1` the fraction of queries whose
    nearest object has their identity, over queries whose identity occurs at least twice.
    Embeddings are gathered from all processes before computing."""

    full_state_update = False

    def __init__(self, chunk_size: int = 1024) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("identities", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, identities: Tensor) -> None:
        """Add L2-normalised embeddings `[m, D]` and their identities `[m]`."""
        self.embeddings.append(embeddings.detach().float())
        self.identities.append(identities.detach())

    def compute(self) -> dict[str, Tensor]:
        if not self.embeddings:
            return {"mAP": torch.tensor(math.nan), "rank1": torch.tensor(math.nan)}
        embeddings, identities = dim_zero_cat(self.embeddings), dim_zero_cat(self.identities)
        n = len(identities)
        precisions, hits = [], []
        for start in range(0, n, self.chunk_size):  # bounded memory: n x chunk similarities
            stop = min(start + self.chunk_size, n)
            # exp: positive scores in the cosine order (torchmetrics' AP drops scores <= 0)
            scores_block = (embeddings[start:stop] @ embeddings.T).exp()
            relevant = identities[start:stop, None] == identities[None, :]
            for row, query in enumerate(range(start, stop)):
                gallery = torch.arange(n, device=embeddings.device) != query
                target = relevant[row, gallery]
                if not target.any():
                    continue
                scores = scores_block[row, gallery]
                precisions.append(retrieval_average_precision(scores, target))
                hits.append(retrieval_hit_rate(scores, target, top_k=1))
        if not precisions:
            return {"mAP": torch.tensor(math.nan), "rank1": torch.tensor(math.nan)}
        return {"mAP": torch.stack(precisions).mean(), "rank1": torch.stack(hits).mean()}

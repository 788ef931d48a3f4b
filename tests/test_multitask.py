"""Multi-task pieces checked against independent references: batch-hard mining on a hand-built
batch, retrieval mAP against a brute-force ranking, multi-label mAP against scikit-learn, the
per-object embedding read-out, and the task weightings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score

from yolor_lightning.config import ConfigValueError, check_values, compose_config
from yolor_lightning.tasks.classification import multilabel_loss, multilabel_metrics
from yolor_lightning.tasks.embedding import (
    EmbeddingRetrieval,
    IdentityClassifier,
    batch_hard_pairs,
    batch_hard_triplet_loss,
    object_embeddings,
    semihard_triplet_loss,
    semihard_triplets,
    triplet_loss,
)
from yolor_lightning.tasks.targets import assign_targets
from yolor_lightning.tasks.weighting import TaskWeighting

# Points on a line (1-D embeddings) so that every distance is obvious:
#   index:     0    1    2    3    4    5
#   position:  0.0  1.0  5.0  0.2  4.0  9.0
#   identity:  a    a    a    b    b    c
LINE = torch.tensor([[0.0], [1.0], [5.0], [0.2], [4.0], [9.0]])
IDENTITIES = torch.tensor([0, 0, 0, 1, 1, 2])


def test_batch_hard_mining_picks_the_farthest_positive_and_the_closest_negative():
    positive, negative, valid = batch_hard_pairs(LINE, IDENTITIES)
    # 0: positives 1 (1.0), 2 (5.0) -> 2; negatives 3 (0.2), 4 (4.0), 5 (9.0) -> 3
    # 1: positives 0 (1.0), 2 (4.0) -> 2; negatives 3 (0.8), 4 (3.0), 5 (8.0) -> 3
    # 2: positives 0 (5.0), 1 (4.0) -> 0; negatives 3 (4.8), 4 (1.0), 5 (4.0) -> 4
    # 3: positive 4 (3.8); negatives 0 (0.2), 1 (0.8), 2 (4.8), 5 (8.8) -> 0
    # 4: positive 3 (3.8); negatives 0 (4.0), 1 (3.0), 2 (1.0), 5 (5.0) -> 2
    # 5: no positive
    assert positive[:5].tolist() == [2, 2, 0, 4, 3]
    assert negative[:5].tolist() == [3, 3, 4, 0, 2]
    assert valid.tolist() == [True, True, True, True, True, False]


def test_batch_hard_triplet_loss_is_the_mean_hinge_over_valid_anchors():
    margin = 0.5
    # d(a, p) - d(a, n) + margin for anchors 0..4 (see the mining test), hinged at 0
    gaps = [5.0 - 0.2, 4.0 - 0.8, 5.0 - 1.0, 3.8 - 0.2, 3.8 - 1.0]
    expected = sum(max(0.0, gap + margin) for gap in gaps) / len(gaps)
    loss = batch_hard_triplet_loss(LINE, IDENTITIES, margin)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_triplet_loss_is_zero_when_identities_are_separated_by_the_margin():
    embeddings = torch.tensor([[0.0], [0.1], [5.0], [5.1]], requires_grad=True)
    loss = batch_hard_triplet_loss(embeddings, torch.tensor([0, 0, 1, 1]), margin=1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(embeddings.grad).all()


def test_triplet_loss_without_any_positive_pair_is_zero_and_differentiable():
    embeddings = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(embeddings, torch.tensor([0, 1, 2]), margin=0.3)
    loss.backward()
    assert loss.item() == 0.0 and embeddings.grad is not None


def test_semihard_mining_takes_every_positive_pair_and_the_closest_farther_negative():
    anchors, positives, negatives = semihard_triplets(LINE, IDENTITIES)
    # (a, p) d(a,p): negatives of a by distance; the closest farther than p (none: the farthest)
    # (0, 1) 1.0: 3 (0.2), 4 (4.0), 5 (9.0) -> 4     (0, 2) 5.0: -> 5 (9.0)
    # (1, 0) 1.0: 3 (0.8), 4 (3.0), 5 (8.0) -> 4     (1, 2) 4.0: -> 5 (8.0)
    # (2, 0) 5.0: 4 (1.0), 5 (4.0), 3 (4.8) -> none farther: 3 (4.8)   (2, 1) 4.0: -> 3 (4.8)
    # (3, 4) 3.8: 0 (0.2), 1 (0.8), 2 (4.8), 5 (8.8) -> 2
    # (4, 3) 3.8: 2 (1.0), 1 (3.0), 0 (4.0), 5 (5.0) -> 0
    triplets = sorted(zip(anchors.tolist(), positives.tolist(), negatives.tolist(), strict=True))
    assert triplets == [
        (0, 1, 4), (0, 2, 5), (1, 0, 4), (1, 2, 5), (2, 0, 3), (2, 1, 3), (3, 4, 2), (4, 3, 0)
    ]  # fmt: skip
    gaps = [1 - 4, 5 - 9, 1 - 3, 4 - 8, 5 - 4.8, 4 - 4.8, 3.8 - 4.8, 3.8 - 4.0]
    margin = 0.5
    expected = sum(max(0.0, gap + margin) for gap in gaps) / len(gaps)
    assert semihard_triplet_loss(LINE, IDENTITIES, margin).item() == pytest.approx(expected)
    assert triplet_loss(LINE, IDENTITIES, margin, "semihard").item() == pytest.approx(expected)


def test_shrinking_every_distance_lowers_the_batch_hard_loss_but_not_the_semihard_one():
    """The collapse that batch-hard mining invites: where the hardest negative is closer than
    the hardest positive, moving every embedding towards one point lowers the loss to the
    margin; semi-hard negatives are farther than their positive, so the loss rises instead."""
    embeddings = F.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)))
    identities = torch.arange(40) % 8
    common = F.normalize(embeddings.mean(0), dim=0)
    hard, semihard = [], []
    for shift in (0.0, 1.0, 4.0, 100.0):
        shrunk = F.normalize(embeddings + shift * common, dim=1)
        hard.append(batch_hard_triplet_loss(shrunk, identities, 0.3).item())
        semihard.append(semihard_triplet_loss(shrunk, identities, 0.3).item())
    assert hard == sorted(hard, reverse=True) and hard[-1] == pytest.approx(0.3, abs=0.01)
    assert semihard == sorted(semihard) and semihard[0] < 0.3


def test_an_unknown_triplet_mining_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"task.emb.mining='easy' is unknown: .*'semihard'"):
        triplet_loss(LINE, IDENTITIES, 0.3, "easy")


def test_a_mining_other_than_hard_needs_the_triplet_loss():
    overrides = ["+experiment=jde", "task.emb.mining=semihard"]
    check_values(compose_config([*overrides, "task.emb.loss=triplet"]))
    with pytest.raises(ConfigValueError, match=r"task.emb.mining='semihard' is only read by"):
        check_values(compose_config(overrides))  # id_ce


def brute_force_retrieval(
    embeddings: torch.Tensor, identities: torch.Tensor
) -> tuple[float, float]:
    """Every object queries all the others ranked by cosine similarity, one at a time."""
    precisions, hits = [], []
    n = len(identities)
    for query in range(n):
        others = [j for j in range(n) if j != query]
        ranked = sorted(others, key=lambda j: -float(embeddings[query] @ embeddings[j]))
        relevant = [identities[j] == identities[query] for j in ranked]
        if not any(relevant):
            continue
        found, precision_sum = 0, 0.0
        for rank, is_relevant in enumerate(relevant, start=1):
            if is_relevant:
                found += 1
                precision_sum += found / rank
        precisions.append(precision_sum / found)
        hits.append(float(relevant[0]))
    return sum(precisions) / len(precisions), sum(hits) / len(hits)


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_retrieval_map_and_rank1_equal_a_brute_force_ranking(chunk_size):
    generator = torch.Generator().manual_seed(0)
    identities = torch.randint(0, 6, (40,), generator=generator)
    identities[-1] = 99  # an identity seen once: no query for it, but in every gallery
    centres = torch.randn(100, 8, generator=generator)
    embeddings = F.normalize(centres[identities] + torch.randn(40, 8, generator=generator), dim=1)
    metric = EmbeddingRetrieval(chunk_size=chunk_size)
    metric.update(embeddings[:25], identities[:25])  # two batches
    metric.update(embeddings[25:], identities[25:])
    result = metric.compute()
    expected_map, expected_rank1 = brute_force_retrieval(embeddings, identities)
    assert result["mAP"].item() == pytest.approx(expected_map, abs=1e-6)
    assert result["rank1"].item() == pytest.approx(expected_rank1, abs=1e-6)
    assert 0 < expected_map < 1


def test_multilabel_map_and_f1_equal_scikit_learn_macro_averages():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(50, 5, generator=generator) < 0.4).long()
    labels[0] = 1  # every class has a positive
    scores = (labels + torch.randn(50, 5, generator=generator)).sigmoid()
    metrics = multilabel_metrics(num_classes=5)
    metrics.update(scores[:20], labels[:20])
    metrics.update(scores[20:], labels[20:])
    result = metrics.compute()
    expected_map = average_precision_score(labels.numpy(), scores.numpy(), average="macro")
    expected_f1 = f1_score(labels.numpy(), (scores >= 0.5).long().numpy(), average="macro")
    assert result["mAP"].item() == pytest.approx(expected_map, abs=1e-6)
    assert result["F1"].item() == pytest.approx(expected_f1, abs=1e-6)


def test_multilabel_loss_smooths_towards_one_half():
    logits = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0]])
    smoothed = torch.tensor([[0.95, 0.05]])
    expected = F.binary_cross_entropy_with_logits(logits, smoothed)
    assert multilabel_loss(logits, labels, label_smoothing=0.1).item() == pytest.approx(
        expected.item()
    )


def test_object_embedding_is_the_normalised_mean_over_its_assigned_cells():
    """Two objects in one 64x64 image, stride-8/16/32 maps; the read-out must average the cells
    that the detection assignment gives each object, on every level."""
    anchors = (
        torch.tensor([[[10.0, 13], [16, 30], [33, 23]]] * 3)
        * torch.tensor([1, 2, 4])[:, None, None]
    )
    strides = (8, 16, 32)
    targets = [
        {
            "boxes": torch.tensor([[4.0, 4, 20, 20], [30, 28, 62, 60]]),
            "labels": torch.tensor([0, 1]),
        }
    ]
    shapes = [(64 // s, 64 // s) for s in strides]
    generator = torch.Generator().manual_seed(0)
    maps = [torch.randn(1, 5, h, w, generator=generator) for h, w in shapes]
    assigned = assign_targets(targets, anchors, strides, shapes)
    embeddings, present = object_embeddings(maps, assigned, num_objects=2)
    for row, obj in enumerate(present.tolist()):
        vectors = [
            maps[level][0, :, y, x]
            for level, matches in enumerate(assigned)
            for t, y, x in zip(matches.target, matches.gy, matches.gx, strict=True)
            if t == obj
        ]
        expected = F.normalize(torch.stack(vectors).mean(0), dim=0)
        torch.testing.assert_close(embeddings[row], expected)
    assert present.tolist() == [0, 1]


def test_identity_classifier_names_an_identity_it_was_not_built_for():
    classifier = IdentityClassifier(dim=4, num_identities=3)
    loss = classifier(F.normalize(torch.randn(2, 4), dim=1), torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="identity 5 is outside the 3 identities"):
        classifier(F.normalize(torch.randn(1, 4), dim=1), torch.tensor([5]))


def test_fixed_weighting_is_the_weighted_sum():
    weighting = TaskWeighting(("det", "cls"), "fixed", {"det": 1.0, "cls": 0.1})
    losses = {"det": torch.tensor(0.5), "cls": torch.tensor(2.0)}
    assert weighting(losses).item() == pytest.approx(0.5 + 0.2)
    assert list(weighting.parameters()) == []


def test_uncertainty_weighting_learns_one_log_variance_per_task():
    weighting = TaskWeighting(("det", "emb"), "uncertainty", {"det": 1.0, "emb": 0.5})
    with torch.no_grad():
        weighting.log_variances.copy_(torch.tensor([0.0, math.log(4.0)]))
    losses = {"det": torch.tensor(0.5), "emb": torch.tensor(2.0)}
    total = weighting(losses)
    assert total.item() == pytest.approx(0.5 + (0.5 * 2.0) / 4 + math.log(4.0))
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L: 1 - 0.5 for det, 1 - 0.25 for emb
    torch.testing.assert_close(weighting.log_variances.grad, torch.tensor([0.5, 0.75]))
    assert weighting.factors()["emb"].item() == pytest.approx(0.5 / 4)


def test_unknown_weighting_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"task\.weighting\.mode='learned'.*'uncertainty'"):
        TaskWeighting(("det",), "learned", {"det": 1.0})

"""YOLOv9's anchor-free head, its task-aligned assigner and its loss, on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch

from yolor_lightning.analysis.implicit import find_sites, folding_check, plot_pr_heatmap
from yolor_lightning.config import ConfigValueError, check_values, compose_config, plain
from yolor_lightning.models import build_network
from yolor_lightning.models.dfl_head import REG_MAX, DFLHead
from yolor_lightning.tasks.alignment import (
    Assignment,
    TaskAlignedAssigner,
    assigned_cells,
    pad_ground_truth,
)
from yolor_lightning.tasks.dfl_loss import DFLLoss, distribution_focal_loss
from yolor_lightning.train import build_module

STRIDE = 8
GRID = 8  # one level, 8x8 cells: a 64x64 image
PEAK = 30.0  # a logit that makes a softmax or sigmoid all but certain


def peaked(distances: torch.Tensor) -> torch.Tensor:
    """Box logits `[..., 4 * REG_MAX]` whose distributions put all their mass on the integer
    `distances` `[..., 4]` (in bins)."""
    logits = torch.full((*distances.shape, REG_MAX), -PEAK)
    logits.scatter_(-1, distances.long().unsqueeze(-1), PEAK)
    return logits.flatten(-2)


def cell_centres() -> torch.Tensor:
    """`[GRID * GRID, 2]` anchor points in pixels, rows then columns."""
    centres = (torch.arange(GRID) + 0.5) * STRIDE
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack((xs.flatten(), ys.flatten()), -1)


def test_a_box_is_assigned_to_the_anchor_points_inside_it() -> None:
    box = torch.tensor([[8.0, 8.0, 32.0, 24.0]])  # centres inside: x 12, 20, 28; y 12, 20
    truth = pad_ground_truth([{"boxes": box, "labels": torch.tensor([2])}], torch.device("cpu"))
    points = cell_centres()
    scores = torch.full((1, len(points), 3), 0.5)
    boxes = box.expand(1, len(points), 4)  # every prediction is the box itself: IoU 1
    assigned = TaskAlignedAssigner(num_classes=3).assign(scores, boxes, points, truth)
    expected = {(x, y) for x in (12.0, 20.0, 28.0) for y in (12.0, 20.0)}
    chosen = {tuple(p.tolist()) for p in points[assigned.foreground[0]]}
    assert chosen == expected
    assert (assigned.labels[0][assigned.foreground[0]] == 2).all()
    assert (assigned.target[0][assigned.foreground[0]] == 0).all()
    assert (assigned.target[0][~assigned.foreground[0]] == -1).all()
    # equal alignment everywhere: every positive's soft target is the best IoU, 1
    torch.testing.assert_close(assigned.scores[0, assigned.foreground[0], 2], torch.ones(6))


def test_the_assigner_keeps_the_topk_best_aligned_points() -> None:
    box = torch.tensor([[8.0, 8.0, 32.0, 24.0]])
    truth = pad_ground_truth([{"boxes": box, "labels": torch.tensor([0])}], torch.device("cpu"))
    points = cell_centres()
    scores = torch.rand(1, len(points), 1, generator=torch.Generator().manual_seed(0))
    boxes = box.expand(1, len(points), 4)
    assigned = TaskAlignedAssigner(num_classes=1, topk=4).assign(scores, boxes, points, truth)
    inside = ((points > box[0, :2]) & (points < box[0, 2:])).all(-1)
    best = scores[0, :, 0].masked_fill(~inside, -1).topk(4).indices
    assert set(assigned.foreground[0].nonzero().flatten().tolist()) == set(best.tolist())


def test_a_point_inside_two_boxes_goes_to_the_one_it_overlaps_most() -> None:
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 24.0, 24.0]])
    truth = pad_ground_truth(
        [{"boxes": boxes, "labels": torch.tensor([0, 1])}], torch.device("cpu")
    )
    points = cell_centres()
    predicted = boxes[1].expand(1, len(points), 4)  # every prediction is the small box
    assigned = TaskAlignedAssigner(num_classes=2).assign(
        torch.full((1, len(points), 2), 0.5), predicted, points, truth
    )
    inside_small = ((points > boxes[1, :2]) & (points < boxes[1, 2:])).all(-1)
    assert (assigned.labels[0][inside_small] == 1).all()
    assert assigned.foreground[0][inside_small].all()


def test_dfl_of_a_target_between_two_bins_weights_them_equally() -> None:
    logits = torch.full((1, 4, REG_MAX), -PEAK)
    logits[..., 2] = logits[..., 3] = 0.0  # half the mass on bin 2, half on bin 3
    loss = distribution_focal_loss(logits, torch.full((1, 4), 2.5))
    torch.testing.assert_close(loss, torch.tensor([math.log(2)]))
    # the even split is the best distribution for this target: an uneven one costs more
    logits[..., 2] = math.log(4)  # 0.8 on bin 2, 0.2 on bin 3
    assert distribution_focal_loss(logits, torch.full((1, 4), 2.5)) > loss


def test_decode_of_a_known_distribution_gives_the_known_box() -> None:
    head = DFLHead([16], num_classes=2, strides=[STRIDE])
    raw = torch.zeros(1, 4 * REG_MAX + 2, 2, 3)  # 2 rows, 3 columns
    box = peaked(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    box[REG_MAX : 2 * REG_MAX] = -PEAK  # top side: half on bin 1, half on bin 2 -> 1.5
    box[REG_MAX + 1] = box[REG_MAX + 2] = 0.0
    raw[0, : 4 * REG_MAX, 1, 2] = box  # the cell of row 1, column 2: centre (2.5, 1.5)
    decoded = head.decode([raw])[0, 1 * 3 + 2]
    left, top, right, bottom = (2.5 - 1) * STRIDE, (1.5 - 1.5) * STRIDE, 5.5 * STRIDE, 5.5 * STRIDE
    expected = [(left + right) / 2, (top + bottom) / 2, right - left, bottom - top, 1.0, 0.5, 0.5]
    torch.testing.assert_close(decoded, torch.tensor(expected))


def test_a_perfect_prediction_has_near_zero_loss() -> None:
    # box edges at cell centres + 0.5: the two points inside sit at integer distances from them
    box_grid = torch.tensor(
        [0.5, 0.5, 3.5, 2.5]
    )  # grid units; points inside: (1.5, 1.5), (2.5, 1.5)
    targets = [{"boxes": (box_grid * STRIDE)[None], "labels": torch.tensor([1])}]
    points = cell_centres() / STRIDE
    distances = torch.cat((points - box_grid[:2], box_grid[2:] - points), -1).clamp(0, REG_MAX - 1)
    box_logits = peaked(distances.round())  # [N, 4 REG_MAX]
    inside = ((points > box_grid[:2]) & (points < box_grid[2:])).all(-1)
    cls_logits = torch.full((len(points), 3), -PEAK)
    cls_logits[inside, 1] = PEAK
    raw = torch.cat((box_logits, cls_logits), -1).T.reshape(1, -1, GRID, GRID)
    loss_fn = DFLLoss([STRIDE], num_classes=3)
    assigned = loss_fn.assign([raw], targets)
    assert assigned.foreground.sum() == 2
    total, parts = loss_fn([raw], targets, assigned)
    assert total < 1e-6
    assert parts["box"] < 1e-6 and parts["dfl"] < 1e-6 and parts["cls"] < 1e-6


def test_an_image_without_boxes_trains_only_the_class_branch_towards_background() -> None:
    raw = torch.zeros(2, 4 * REG_MAX + 3, GRID, GRID, requires_grad=True)
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    total, parts = DFLLoss([STRIDE], num_classes=3)([raw], targets)
    assert parts["box"] == 0 and parts["dfl"] == 0 and parts["cls"] > 0
    total.backward()
    assert raw.grad[:, : 4 * REG_MAX].abs().sum() == 0


@pytest.mark.parametrize("gains", [{"box_gain": 2.0, "cls_gain": 3.0, "dfl_gain": 4.0}])
def test_gains_scale_their_parts(gains: dict[str, float]) -> None:
    raw = torch.randn(1, 4 * REG_MAX + 3, GRID, GRID, generator=torch.Generator().manual_seed(0))
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 32.0]]), "labels": torch.tensor([0])}]
    _, plain = DFLLoss([STRIDE], 3, box_gain=1.0, cls_gain=1.0, dfl_gain=1.0)([raw], targets)
    _, scaled = DFLLoss([STRIDE], 3, **gains)([raw], targets)
    for part in ("box", "cls", "dfl"):
        torch.testing.assert_close(scaled[part], gains[f"{part}_gain"] * plain[part])


def test_the_training_module_trains_gelan_with_the_dfl_loss_and_validates() -> None:
    module = build_module(compose_config(["model=gelan", "task=jdc"]))
    assert isinstance(module.loss_fn, DFLLoss)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 32.0], [30.0, 20.0, 60.0, 60.0]])
    batch = {
        "targets": [{"boxes": boxes, "labels": torch.tensor([0, 3])}] * 2,
        "image_labels": torch.zeros(2, 8).index_fill_(1, torch.tensor([0, 3]), 1.0),
    }
    outputs = module(torch.rand(2, 3, 64, 64))
    losses, parts, _ = module.task_losses(outputs, batch)
    assert set(parts) == {"box", "cls", "dfl"} and all(p > 0 for p in parts.values())
    sum(losses.values()).backward()
    gradients = [p.grad for p in module.network.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    decoded = module.network.heads["det"].decode(outputs["det"])
    assert decoded.shape == (2, 64 // 8 * 64 // 8 + 16 + 4, 5 + 8)


def test_dfl_head_refuses_anchor_sites_in_config() -> None:
    with pytest.raises(ConfigValueError, match=r"fa_star.*dfl"):
        check_values(compose_config(["model=gelan", "model.implicit.fa_star.operator=mul"]))


def test_assigned_points_become_cells_of_their_level() -> None:
    foreground = torch.zeros(2, 4 * 4 + 2 * 2, dtype=torch.bool)
    target = torch.full(foreground.shape, -1)
    foreground[1, 4 * 1 + 3], target[1, 4 * 1 + 3] = True, 5  # level 0: row 1, column 3
    foreground[0, 16 + 2], target[0, 16 + 2] = True, 0  # level 1: row 1, column 0
    assigned = Assignment(foreground, target.clamp(min=0), torch.zeros(2, 20, 4), target, None)
    level0, level1 = assigned_cells(assigned, [(4, 4), (2, 2)])
    assert [t.tolist() for t in level0] == [[1], [1], [3], [5]]
    assert [t.tolist() for t in level1] == [[0], [1], [0], [0]]


def test_jde_reads_embeddings_at_the_dfl_heads_assigned_points() -> None:
    cfg = compose_config(["model=gelan", "task=jde", "task.emb.loss=triplet"])
    check_values(cfg)
    module = build_module(cfg)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 32.0], [30.0, 20.0, 60.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([0, 3]), "identities": torch.tensor([4, 7])}
    outputs = module(torch.rand(2, 3, 64, 64))
    losses, _, (embeddings, identities) = module.task_losses(outputs, {"targets": [target] * 2})
    assert embeddings.shape == (4, module.network.heads["emb"].dim)
    assert identities.tolist() == [4, 7, 4, 7]
    assert torch.isfinite(losses["emb"])


def test_the_analysis_api_inspects_and_folds_the_dfl_heads_sites() -> None:
    network = build_network(plain(compose_config(["+experiment=yolor_gelan"]).model)).eval()
    sites = find_sites(network)
    assert {site.name for site in sites} == {"fa", "pr"}
    assert len(sites) == 12  # fa and pr on the box and the class branch of 3 levels
    assert folding_check(network, torch.rand(1, 3, 64, 64))["max_rel"] < 1e-5
    with pytest.raises(ValueError, match="no anchors"):
        plot_pr_heatmap(network)

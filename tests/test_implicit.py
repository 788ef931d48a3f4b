"""Implicit knowledge: priors start at their operator's identity, operators combine as the
formulas say, and every site x operator x prior folds into a plain network of baseline cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.implicit import (
    IDENTITY,
    PRIORS,
    Implicit,
    ImplicitConv2d,
    MFPrior,
    combine,
    fold,
    make_implicit,
    make_prior,
    sparsity_penalty,
)
from yolor_lightning.models import YOLOv4CSP, build_yolov4_csp, output_tensors
from yolor_lightning.models.sites import SITE_OPERATORS

NUM_CLASSES = 3
IMAGE_SIZE = 64
SITE_MATRIX = [
    (site, operator, prior)
    for site, operators in SITE_OPERATORS.items()
    for operator in operators
    for prior in PRIORS
]
YOLOR_CSP = {"fa": {"operator": "add"}, "pr": {"operator": "mul"}}
ALL_TASKS = ("det", "cls", "emb")  # every branch, so that every site can be enabled


def multi_task_network(implicit: dict | None = None) -> YOLOv4CSP:
    return build_yolov4_csp("tiny", NUM_CLASSES, implicit, tasks=ALL_TASKS, embedding_dim=16)


def randomize(network: nn.Module) -> nn.Module:
    """Random implicit parameters (far from the identity) and BatchNorm statistics; eval mode."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, Implicit):
                for parameter in module.parameters():
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(0.3 * noise)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
    return network.eval()


def assert_relative_close(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * e.abs().max().item())


@pytest.mark.parametrize("name", PRIORS)
@pytest.mark.parametrize("operator", ["add", "mul", "concat"])
def test_every_prior_starts_at_its_operators_identity(name: str, operator: str):
    torch.manual_seed(0)
    g = make_prior(name, 256, IDENTITY[operator], std=0.02, groups=3)()
    assert g.shape == (3, 256)
    assert (g.mean() - IDENTITY[operator]).abs() < 0.005
    assert 0.01 < g.std() < 0.03


def test_unknown_prior_lists_the_allowed_priors():
    with pytest.raises(ValueError, match=r"'pca'.*vector, nn, mf"):
        make_prior("pca", 8, 0.0)


def test_unknown_operator_lists_the_allowed_operators():
    with pytest.raises(ValueError, match=r"'sub'.*add, mul, concat"):
        combine("sub", torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1))


def test_prior_sizes_follow_the_formulas():
    def size(module: nn.Module) -> int:
        return count_parameters(module)

    assert size(make_prior("vector", 16, 0.0)) == 16
    assert size(make_prior("nn", 16, 0.0)) == 32 + 16 * 32 + 16  # z (2C), W (C x 2C), b (C)
    assert size(make_prior("nn", 16, 0.0, latent_dim=4)) == 4 + 16 * 4 + 16
    assert size(make_prior("mf", 16, 0.0)) == 32 * 16 + 32  # Z (K x C, K = 2C), c (K)
    assert size(make_prior("mf", 16, 0.0, bases=5, groups=3)) == 3 * (5 * 16 + 5)


def test_nonneg_coefficients_stay_non_negative_and_start_at_one_over_k():
    prior = make_prior("mf", 4, 1.0, bases=8, coefficients="nonneg")
    assert isinstance(prior, MFPrior)
    torch.testing.assert_close(prior.coefficients(), torch.full((1, 8), 1 / 8))
    with torch.no_grad():
        prior.raw_coefficients.fill_(-50.0)
    assert prior.coefficients().min() >= 0


def test_sparsity_penalty_is_the_l1_norm_of_sparse_coefficients_only():
    network = nn.ModuleList(
        [
            make_prior("mf", 4, 0.0, bases=3, coefficients="sparse"),
            make_prior("mf", 4, 0.0, bases=3, coefficients="free"),
            make_prior("vector", 4, 0.0),
        ]
    )
    with torch.no_grad():
        network[0].raw_coefficients.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    assert sparsity_penalty(network).item() == pytest.approx(3.5)
    assert sparsity_penalty(network[1:]) is None


def test_operators_combine_as_the_formulas_say():
    x = torch.rand(2, 3, 4, 5)
    g = torch.rand(1, 3, 1, 1)
    torch.testing.assert_close(combine("add", x, g), x + g)
    torch.testing.assert_close(combine("mul", x, g), x * g)
    joined = combine("concat", x, g)
    assert joined.shape == (2, 6, 4, 5)
    torch.testing.assert_close(joined[:, 3:], g.expand(2, 3, 4, 5))


def test_concat_at_fa_doubles_the_prediction_conv_input():
    with torch.device("meta"):
        model = YOLOv4CSP(num_classes=80, implicit={"fa": {"operator": "concat"}})
    assert [p.conv.in_channels for p in model.heads["det"].predictors] == [512, 1024, 2048]


def test_pr_star_scales_only_the_width_and_height_outputs():
    head = build_yolov4_csp("tiny", NUM_CLASSES, {"pr_star": {"operator": "mul"}}).heads["det"]
    (implicit,) = head.predictors[0].after
    with torch.no_grad():
        implicit.prior.z.fill_(2.0)
    m = implicit.value().view(3, 5 + NUM_CLASSES)
    assert count_parameters(implicit) == 3 * 2
    assert (m[:, 2:4] == 2.0).all()
    assert (m[:, :2] == 1.0).all() and (m[:, 4:] == 1.0).all()


def test_fa_star_gives_each_anchor_its_own_scaled_features():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3 * 2, 1)
    implicit = make_implicit("mul", 4, groups=3, std=0.5)
    layer = ImplicitConv2d(conv, before=[implicit])
    x = torch.rand(1, 4, 2, 2)
    m = implicit.value()
    expected = torch.cat(
        [conv(x * m[a].view(1, 4, 1, 1))[:, 2 * a : 2 * a + 2] for a in range(3)], dim=1
    )
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["add"], []),
        (["mul"], []),
        (["concat"], []),
        ([], ["add"]),
        ([], ["mul"]),
        (["add"], ["mul"]),
        (["concat"], ["add", "mul"]),
    ],
)
def test_fold_of_a_single_conv_matches_unfolded_output(before: list[str], after: list[str]):
    torch.manual_seed(0)
    widen = 2 if before == ["concat"] else 1
    conv = nn.Conv2d(widen * 4, 6, 1)
    layer = ImplicitConv2d(
        conv,
        before=[make_implicit(op, 4, std=0.5) for op in before],
        after=[make_implicit(op, 6, std=0.5) for op in after],
    )
    x = torch.rand(2, 4, 3, 3)
    folded = fold(layer)
    assert type(folded) is nn.Conv2d and folded.in_channels == 4
    torch.testing.assert_close(folded(x), layer(x))


def test_folding_rejects_a_conv_it_cannot_fold_into():
    with pytest.raises(ValueError, match="1x1"):
        ImplicitConv2d(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="does not fold"):
        make_implicit("concat", 4).fold_after(torch.zeros(4, 4), torch.zeros(4))


@pytest.mark.parametrize(("site", "operator", "prior"), SITE_MATRIX)
def test_fold_matches_unfolded_output_and_costs_the_baseline(site, operator, prior):
    torch.manual_seed(0)
    network = randomize(multi_task_network({site: {"operator": operator, "prior": prior}}))
    check_fold(network)


@pytest.mark.parametrize(
    "implicit",
    [
        YOLOR_CSP,
        {
            "fa": {"operator": "concat", "prior": "nn"},
            "fa_star": {"operator": "mul", "prior": "mf", "coefficients": "nonneg"},
            "pr": {"operator": "add", "prior": "mf", "coefficients": "sparse"},
            "pr_star": {"operator": "mul", "prior": "nn", "latent_dim": 3},
            "task_cls": {"operator": "concat", "prior": "mf"},
            "task_emb": {"operator": "mul", "prior": "nn"},
        },
    ],
    ids=["yolor_csp", "all_sites"],
)
def test_fold_of_combined_sites_matches_unfolded_output(implicit):
    torch.manual_seed(0)
    check_fold(randomize(multi_task_network(implicit)))


def check_fold(network: YOLOv4CSP) -> None:
    """Every task's outputs agree; the folded network is the baseline (same tasks, no site)."""
    baseline = multi_task_network()
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    folded = fold(network)
    with torch.no_grad():
        actual, expected = folded(images), network(images)
    assert actual.keys() == expected.keys() == set(ALL_TASKS)
    assert_relative_close(output_tensors(actual), output_tensors(expected))
    assert type(folded) is YOLOv4CSP
    assert not any(isinstance(m, Implicit | ImplicitConv2d) for m in folded.modules())
    assert folded.state_dict().keys() == baseline.state_dict().keys()
    assert count_parameters(folded) == count_parameters(baseline) < count_parameters(network)
    assert count_gflops(folded, IMAGE_SIZE) == count_gflops(baseline, IMAGE_SIZE)


def test_fold_leaves_the_trained_network_untouched():
    network = randomize(build_yolov4_csp("tiny", NUM_CLASSES, YOLOR_CSP))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    fold(network)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert isinstance(network.heads["det"].predictors[0], ImplicitConv2d)


def test_full_size_yolor_csp_implicit_knowledge_is_under_a_ten_thousandth_of_the_parameters():
    with torch.device("meta"):
        baseline = YOLOv4CSP(num_classes=80)
        yolor = YOLOv4CSP(num_classes=80, implicit=YOLOR_CSP)
    added = count_parameters(yolor) - count_parameters(baseline)
    assert added == (256 + 512 + 1024) + 3 * 255  # one fa vector per level, one pr vector
    assert added < count_parameters(baseline) / 10_000
    assert count_parameters(fold(yolor)) == count_parameters(baseline)


def test_network_rejects_a_site_or_operator_it_does_not_have():
    with pytest.raises(ValueError, match=r"'concat'.*site pr; allowed: add, mul"):
        build_yolov4_csp("tiny", NUM_CLASSES, {"pr": {"operator": "concat"}})
    with pytest.raises(ValueError, match=r"'neck'.*fa, pr, fa_star, pr_star"):
        build_yolov4_csp("tiny", NUM_CLASSES, {"neck": {"operator": "add"}})
    with pytest.raises(ValueError, match="one implicit vector"):
        make_implicit("concat", 4, groups=3)
    with pytest.raises(ValueError, match=r"task\.cls sits in the cls branch.*\['det'\]"):
        build_yolov4_csp("tiny", NUM_CLASSES, {"task_cls": {"operator": "add"}})

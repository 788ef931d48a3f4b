"""The implicit-knowledge analysis API against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from yolor_lightning.analysis.implicit import (
    effective_implicit,
    find_sites,
    folding_check,
    format_table,
    g_statistics,
    implicit_sites,
    plot_distributions,
    plot_pr_heatmap,
    plot_prior_factors,
    plot_site_vectors,
    pr_heatmap,
    prior_factors,
    spread_change,
    step_response,
)
from yolor_lightning.implicit import Implicit, make_prior
from yolor_lightning.models import build_yolov4_csp

NUM_CLASSES = 3
OUTPUTS = 5 + NUM_CLASSES
ALL_SITES = {
    "fa": {"operator": "add", "prior": "mf"},
    "fa_star": {"operator": "mul"},
    "pr": {"operator": "mul", "prior": "nn"},
    "pr_star": {"operator": "mul"},
}


def network_with(implicit: dict) -> nn.Module:
    torch.manual_seed(0)
    return build_yolov4_csp("tiny", NUM_CLASSES, implicit=implicit).eval()


def set_vector(implicit: Implicit, values: torch.Tensor) -> None:
    with torch.no_grad():
        implicit.prior.z.copy_(values.view_as(implicit.prior.z))


def test_sites_are_found_with_their_level_operator_prior_and_shape():
    network = network_with(ALL_SITES)
    widths = network.neck.out_channels
    found = [
        (s.name, s.level, s.operator, s.prior, tuple(s.value().shape)) for s in find_sites(network)
    ]
    expected = []
    for level, width in enumerate(widths):
        expected += [
            ("fa", level, "add", "mf", (1, width)),
            ("fa*", level, "mul", "vector", (3, width)),
            ("pr", level, "mul", "nn", (1, 3 * OUTPUTS)),
            ("pr*", level, "mul", "vector", (3, 2)),
        ]
    assert found == expected
    assert find_sites(network)[0].path == "heads.det.predictors.0.before.0"


def test_a_network_without_implicit_knowledge_has_no_sites():
    assert implicit_sites(network_with({})) == []


def test_statistics_of_a_vector_set_to_known_values():
    network = network_with({"pr": {"operator": "mul"}})
    values = torch.arange(3 * OUTPUTS, dtype=torch.float32) / 10  # 0.0, 0.1, ..., 2.3
    set_vector(find_sites(network)[0].implicit, values)
    row = implicit_sites(network)[0]
    n = values.numel()
    assert (row["site"], row["level"], row["operator"], row["prior"]) == ("pr", 0, "mul", "vector")
    assert (row["shape"], row["params"]) == ((1, n), n)
    assert row["mean"] == pytest.approx(0.1 * (n - 1) / 2)
    assert row["std"] == pytest.approx(0.1 * math.sqrt((n * n - 1) / 12))
    assert (row["min"], row["max"]) == (pytest.approx(0.0), pytest.approx(0.1 * (n - 1)))
    rms = math.sqrt(sum((0.1 * k - 1) ** 2 for k in range(n)) / n)
    assert row["distance"] == pytest.approx(rms)


def test_distance_is_measured_from_the_operators_identity():
    g = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    assert g_statistics(g, 0.0) == pytest.approx(
        {"mean": 0.0, "std": 1.0, "min": -1.0, "max": 1.0, "distance": 1.0}
    )
    assert g_statistics(g, 1.0)["distance"] == pytest.approx(math.sqrt(2.0))


def test_effective_implicit_is_the_prior_output_per_site_and_level():
    network = network_with(ALL_SITES)
    effective = effective_implicit(network)
    assert len(effective) == 4 * 3
    for site in find_sites(network):
        torch.testing.assert_close(effective[site.name, site.level], site.implicit.prior())
    assert not any(g.requires_grad for g in effective.values())


def test_pr_heatmap_is_the_pr_vector_reshaped_anchors_by_outputs():
    network = network_with({"pr": {"operator": "mul"}})
    pr = next(s for s in find_sites(network) if s.level == 1)
    set_vector(pr.implicit, torch.arange(3 * OUTPUTS, dtype=torch.float32))
    heatmap = pr_heatmap(network, level=1)
    assert heatmap.shape == (3, OUTPUTS)
    assert heatmap[2, 4].item() == 2 * OUTPUTS + 4  # anchor 2's objectness
    torch.testing.assert_close(heatmap.flatten(), pr.implicit.prior().detach().flatten())


def test_pr_heatmap_without_a_pr_site_names_the_sites_there_are():
    with pytest.raises(ValueError, match=r"no pr site at level 0; its sites: fa@0, fa@1, fa@2"):
        pr_heatmap(network_with({"fa": {"operator": "add"}}), level=0)


def test_prior_factors_rebuild_g_by_the_formulas():
    nn_prior = make_prior("nn", 6, 1.0, latent_dim=4)
    f = prior_factors(nn_prior)
    assert (f["W"].shape, f["z"].shape, f["b"].shape) == ((1, 6, 4), (1, 4), (1, 6))
    torch.testing.assert_close(f["W"][0] @ f["z"][0] + f["b"][0], nn_prior()[0].detach())

    mf_prior = make_prior("mf", 6, 0.0, bases=5, coefficients="nonneg")
    f = prior_factors(mf_prior)
    assert (f["Z"].shape, f["c"].shape) == ((1, 5, 6), (1, 5))
    torch.testing.assert_close(f["c"], torch.full((1, 5), 0.2))  # softplus applied: 1/K
    torch.testing.assert_close(f["Z"][0].T @ f["c"][0], mf_prior()[0].detach())

    assert set(prior_factors(make_prior("vector", 6, 0.0))) == {"z"}


def test_one_sgd_step_moves_a_vector_prior_by_exactly_the_learning_rate():
    prior = make_prior("vector", 16, 1.0)
    before = prior.z.detach().clone()
    assert step_response(prior) == pytest.approx(1.0, abs=1e-9)
    assert torch.equal(prior.z, before)  # the prior itself is not stepped


def test_nn_step_response_is_one_plus_the_squared_latent_norm_when_w_is_zero():
    prior = make_prior("nn", 8, 0.0, latent_dim=10)
    with torch.no_grad():
        prior.weight.zero_()
        prior.z.fill_(1.0)  # ‖z‖² = 10; Δg = -lr (1 + ‖z‖²) u exactly
    assert step_response(prior) == pytest.approx(11.0, rel=1e-9)


def test_mf_step_response_is_the_squared_coefficient_norm_when_bases_are_zero():
    prior = make_prior("mf", 8, 0.0, bases=4)
    with torch.no_grad():
        prior.bases.zero_()
        prior.raw_coefficients.copy_(torch.tensor([[1.0, 2.0, 0.0, 2.0]]))  # ‖c‖² = 9
    assert step_response(prior) == pytest.approx(9.0, rel=1e-9)


def test_spread_change_compares_distances_from_the_identity():
    initial = network_with({"fa": {"operator": "add"}})
    learned = network_with({"fa": {"operator": "add"}})
    for site in find_sites(learned):
        set_vector(site.implicit, 3 * site.value())
    rows = spread_change(initial, learned)
    assert [(r["site"], r["level"], r["prior"]) for r in rows] == [
        ("fa", 0, "vector"),
        ("fa", 1, "vector"),
        ("fa", 2, "vector"),
    ]
    for row in rows:
        assert row["ratio"] == pytest.approx(3.0)
        assert row["learned"] == pytest.approx(3 * row["initial"])


def test_folding_check_is_zero_for_a_network_with_implicit_sites():
    network = network_with(ALL_SITES).train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for site in find_sites(network):
            for parameter in site.implicit.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    check = folding_check(network, torch.rand(2, 3, 64, 64, generator=generator))
    assert check["max_rel"] < 1e-5
    assert check["max_abs"] < 1e-4
    assert network.training  # the mode is restored


def test_format_table_aligns_columns():
    table = format_table([{"site": "fa", "mean": 0.5}, {"site": "pr*", "mean": -1.0}], digits=2)
    assert table.splitlines() == [
        "site   mean",
        "----  -----",
        "  fa   0.50",
        " pr*  -1.00",
    ]


def test_plots_return_figures_with_one_panel_per_site_or_level():
    network = network_with(ALL_SITES)
    assert len(plot_site_vectors(network).axes) == 4
    assert len(plot_pr_heatmap(network).axes) == 3 + 1  # levels and the colour bar
    assert len(plot_prior_factors(find_sites(network)[0]).axes) == 3 + 1  # g, Z, c and a colour bar
    assert len(plot_prior_factors(find_sites(network)[1]).axes) == 1  # vector prior: g only
    assert isinstance(plot_distributions(network), Figure)
    with pytest.raises(ValueError, match="no pr site"):
        plot_pr_heatmap(network_with({"fa": {"operator": "add"}}))

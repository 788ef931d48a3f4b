"""Inspecting implicit knowledge: where a network's implicit layers sit, what `g_φ(z)` they learned,
how each prior is built, and whether folding them away leaves the predictions unchanged.

Plain functions on a network (checkpoints are read by `yolor_lightning.checkpoints`); the plots
build `matplotlib.figure.Figure` objects directly, so they work under any backend (Agg included)
and leave pyplot's global state alone.

Each `Implicit` layer carries the site the network built it for (`fa`, `pr`, `fa*`, `pr*`,
`task.cls`, `task.emb`); a site's levels are its layers in the order the network holds them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor, nn

from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.implicit import IDENTITY, PRIORS, Implicit, MFPrior, NNPrior
from yolor_lightning.implicit import fold as fold_network
from yolor_lightning.models import output_tensors
from yolor_lightning.models.sites import SITE_LABELS

SITES: tuple[str, ...] = tuple(SITE_LABELS.values())
"""Site names as this module reports them: fa, pr, fa*, pr*, task.cls, task.emb."""

PREDICTION_FIELDS: tuple[str, ...] = ("x", "y", "w", "h", "obj")
"""The first outputs of each anchor, before its class scores."""


@dataclass(frozen=True)
class Site:
    """One implicit layer of a network: which site and level it is, and the layer itself."""

    name: str  # fa | pr | fa* | pr* | task.cls | task.emb
    level: int
    path: str  # the module's name in the network, e.g. head.predictors.0.before.0
    implicit: Implicit

    @property
    def operator(self) -> str:
        return self.implicit.operator

    @property
    def prior(self) -> str:
        """vector | nn | mf."""
        return next(name for name, kind in PRIORS.items() if isinstance(self.implicit.prior, kind))

    @property
    def identity(self) -> float:
        """The value of `g` that leaves the features unchanged (0 for add and concat, 1 for mul)."""
        return IDENTITY[self.operator]

    def value(self) -> Tensor:
        """The effective `g_φ(z)`, detached: [groups, channels] (for `pr*`: [anchors, 2])."""
        with torch.no_grad():
            return self.implicit.prior().detach().clone()


def load_network(checkpoint: str | Path) -> nn.Module:
    """The network of a training checkpoint, on the CPU, in eval mode (the checkpoint's
    hyper-parameters carry the model config, implicit sites included; its `state_dict` holds the
    EMA weights that validation used)."""
    return module_from_checkpoint(load_checkpoint(checkpoint)).network.eval()


def checkpoint_model_config(checkpoint: str | Path) -> dict[str, Any]:
    """The `model` config a checkpoint was trained with (size, num_classes, implicit)."""
    return dict(load_checkpoint(checkpoint)["hyper_parameters"]["model"])


def find_sites(network: nn.Module) -> list[Site]:
    """Every implicit layer of `network` in the order the network holds them (per level of the
    detection head: fa, fa*, pr, pr*; then task.cls, then task.emb level by level)."""
    sites: list[Site] = []
    for path, implicit in network.named_modules():
        if not isinstance(implicit, Implicit):
            continue
        if implicit.site not in SITE_LABELS:
            raise ValueError(
                f"implicit layer {path} does not say which site it is: {implicit.site}"
            )
        name = SITE_LABELS[implicit.site]
        level = sum(site.name == name for site in sites)
        sites.append(Site(name, level, path, implicit))
    return sites


def g_statistics(g: Tensor, identity: float) -> dict[str, float]:
    """Mean, std (population), min and max of `g`, and `distance`: its root-mean-square
    distance from the operator's identity, `sqrt(mean((g - identity)²))`."""
    g = g.detach().double()
    return {
        "mean": g.mean().item(),
        "std": g.std(correction=0).item(),
        "min": g.min().item(),
        "max": g.max().item(),
        "distance": (g - identity).square().mean().sqrt().item(),
    }


def implicit_sites(network: nn.Module) -> list[dict[str, Any]]:
    """One row per implicit layer: `site`, `level`, `operator`, `prior`, `shape` of `g`,
    `params` (the layer's parameter count) and the statistics of `g_statistics`."""
    return [
        {
            "site": site.name,
            "level": site.level,
            "operator": site.operator,
            "prior": site.prior,
            "shape": tuple(site.value().shape),
            "params": sum(p.numel() for p in site.implicit.parameters()),
            **g_statistics(site.value(), site.identity),
        }
        for site in find_sites(network)
    ]


def format_table(rows: Sequence[Mapping[str, Any]], digits: int = 4) -> str:
    """Rows of equal keys as an aligned plain-text table (floats with `digits` decimals)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [
        [f"{row[c]:.{digits}f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        for row in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in lines
    )


def effective_implicit(network: nn.Module) -> dict[tuple[str, int], Tensor]:
    """The effective `g_φ(z)` of every implicit layer, keyed by (site, level): [groups, channels]
    (one row, or one per anchor at fa*; pr*: [anchors, 2], the w and h scales)."""
    return {(site.name, site.level): site.value() for site in find_sites(network)}


def _site(network: nn.Module, name: str, level: int) -> Site:
    sites = find_sites(network)
    for site in sites:
        if (site.name, site.level) == (name, level):
            return site
    found = ", ".join(f"{s.name}@{s.level}" for s in sites) or "none"
    raise ValueError(f"the network has no {name} site at level {level}; its sites: {found}")


def _num_anchors(network: nn.Module, num_anchors: int | None) -> int:
    if num_anchors is not None:
        return num_anchors
    heads = getattr(network, "heads", {})
    if "det" not in heads:
        raise ValueError("pass num_anchors: the network has no detection head to read it from")
    if not hasattr(heads["det"], "num_anchors"):
        raise ValueError(
            f"the pr heatmap has a row per anchor: the {type(heads['det']).__name__} has no "
            "anchors (an anchor-free head's pr values are inspected with implicit_sites)"
        )
    return int(heads["det"].num_anchors)


def pr_heatmap(network: nn.Module, level: int, num_anchors: int | None = None) -> Tensor:
    """The `pr` site's `g` at `level` as a matrix anchors x (x, y, w, h, obj, classes...), the
    layout of the YOLOR paper's Figure 9: row `a` holds the values that refine anchor `a`'s
    outputs. `num_anchors` defaults to the detection head's."""
    g = _site(network, "pr", level).value()
    return g.reshape(_num_anchors(network, num_anchors), -1)


def prior_factors(prior: nn.Module) -> dict[str, Tensor]:
    """The factors that make up `g` (detached; the first axis is the group):
    vector: `z` [G, C]; nn (`g = W z + b`): `W` [G, C, D], `z` [G, D], `b` [G, C];
    mf (`g = Zᵀ c`): `Z` (bases) [G, K, C], `c` (coefficients, after softplus for nonneg) [G, K]."""
    with torch.no_grad():
        if isinstance(prior, NNPrior):
            factors = {"W": prior.weight, "z": prior.z, "b": prior.bias}
        elif isinstance(prior, MFPrior):
            factors = {"Z": prior.bases, "c": prior.coefficients()}
        else:
            factors = {"z": prior()}
        return {name: value.detach().clone() for name, value in factors.items()}


def step_response(prior: nn.Module, lr: float = 1e-3, directions: int = 8, seed: int = 0) -> float:
    """How far one plain SGD step on the prior's own parameters moves `g`, per unit of learning
    rate and of gradient on `g`: the mean of `‖Δg‖ / lr` over `directions` random unit gradients.

    To first order in `lr`, for a unit gradient `u` on `g`: a vector prior gives exactly 1
    (`Δz = -lr u`); `nn` gives `‖(1 + ‖z‖²) u + W Wᵀ u‖` (through `b`, `W` and `z`); `mf` gives
    `‖‖c‖² u + Zᵀ Z u‖` (through `Z` and `c`). A larger response means the same gradient moves
    that prior's `g` further: its effective learning rate. `prior` is not modified.
    """
    generator = torch.Generator().manual_seed(seed)
    prior = copy.deepcopy(prior).double()  # Δg is small next to g (about 1 for mul)
    with torch.no_grad():
        start = prior()
    ratios = []
    for _ in range(directions):
        moved = copy.deepcopy(prior)
        u = torch.randn(start.shape, generator=generator, dtype=start.dtype)
        u /= u.norm()
        (moved() * u).sum().backward()
        with torch.no_grad():
            for parameter in moved.parameters():
                parameter -= lr * parameter.grad
            ratios.append(((moved() - start).norm() / lr).item())
    return sum(ratios) / len(ratios)


def spread_change(initial: nn.Module, learned: nn.Module) -> list[dict[str, Any]]:
    """For every site and level of two networks with the same sites (e.g. freshly built and
    trained): the distance of `g` from the identity before and after, and their ratio."""
    before = {(s.name, s.level): s for s in find_sites(initial)}
    rows = []
    for site in find_sites(learned):
        start = before.get((site.name, site.level))
        if start is None:
            raise ValueError(f"the initial network has no {site.name} site at level {site.level}")
        d0 = g_statistics(start.value(), start.identity)["distance"]
        d1 = g_statistics(site.value(), site.identity)["distance"]
        rows.append(
            {
                "site": site.name,
                "level": site.level,
                "prior": site.prior,
                "initial": d0,
                "learned": d1,
                "ratio": d1 / d0 if d0 else math.inf,
            }
        )
    return rows


def folding_check(network: nn.Module, images: Tensor) -> dict[str, float]:
    """Run `network` and `fold(network)` (both in eval mode, no gradients) on `images` and return
    `max_abs`, the largest absolute difference over all outputs, and `max_rel`, that difference
    over the largest absolute output. The network's mode is restored."""
    was_training = network.training
    try:
        network.eval()
        folded = fold_network(network).eval()
        with torch.no_grad():
            expected, actual = network(images), folded(images)
    finally:
        network.train(was_training)
    expected, actual = output_tensors(expected), output_tensors(actual)
    max_abs = max((a - e).abs().max().item() for a, e in zip(actual, expected, strict=True))
    scale = max(e.abs().max().item() for e in expected)
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale else max_abs}


def _label(site: Site) -> str:
    return f"{site.name} ({site.operator}, {site.prior})"


def _draw_site(ax: Axes, members: Sequence[Site], title: str) -> None:
    """One site's `g` per level against the channel index, the identity dashed."""
    for site in members:
        ax.plot(site.value().flatten().numpy(), lw=0.8, label=f"level {site.level}")
    ax.axhline(members[0].identity, color="k", ls="--", lw=0.6)
    ax.set_title(title)
    ax.set_xlabel("channel (groups one after the other)")
    ax.set_ylabel("g")
    ax.legend(fontsize="small")


def plot_site_vectors(network: nn.Module) -> Figure:
    """One panel per site: its `g` per level against the channel index (groups one after the
    other), with the operator's identity as a dashed line."""
    sites = find_sites(network)
    names = [name for name in SITES if any(s.name == name for s in sites)]
    figure = Figure(figsize=(10, 2.6 * max(1, len(names))), layout="constrained")
    axes = figure.subplots(max(1, len(names)), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=False):
        members = [s for s in sites if s.name == name]
        _draw_site(ax, members, _label(members[0]))
    if not names:
        axes[0].set_title("no implicit sites")
    return figure


def plot_vectors_side_by_side(networks: Mapping[str, nn.Module]) -> Figure:
    """The learned `g` of several networks (e.g. one per configuration of a sweep): a row per
    network, a column per site name any of them has; a network without that site leaves its
    panel empty."""
    found = {label: find_sites(network) for label, network in networks.items()}
    names = [n for n in SITES if any(s.name == n for sites in found.values() for s in sites)]
    rows, columns = max(1, len(found)), max(1, len(names))
    figure = Figure(figsize=(4.5 * columns, 2.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for row, (label, sites) in zip(axes, found.items(), strict=False):
        for ax, name in zip(row, names, strict=False):
            members = [s for s in sites if s.name == name]
            if members:
                _draw_site(ax, members, f"{label}: {_label(members[0])}")
            else:
                ax.set_title(f"{label}: no {name}")
                ax.axis("off")
    if not names:
        axes[0, 0].set_title("no implicit sites in these networks")
    return figure


def plot_pr_heatmap(
    network: nn.Module, class_names: Sequence[str] | None = None, num_anchors: int | None = None
) -> Figure:
    """The `pr` heatmaps of every level side by side (`pr_heatmap`), coloured around the
    operator's identity (white: unchanged; red above, blue below)."""
    levels = [s for s in find_sites(network) if s.name == "pr"]
    if not levels:
        raise ValueError("the network has no pr site")
    maps = [pr_heatmap(network, s.level, num_anchors) for s in levels]
    identity = levels[0].identity
    reach = max((m - identity).abs().max().item() for m in maps) or 1e-6
    norm = Normalize(identity - reach, identity + reach)
    num_classes = maps[0].shape[1] - len(PREDICTION_FIELDS)
    columns = [*PREDICTION_FIELDS, *(class_names or [f"c{k}" for k in range(num_classes)])]
    figure = Figure(figsize=(1 + 0.45 * len(columns) * len(maps), 2.8), layout="constrained")
    axes = figure.subplots(1, len(maps), squeeze=False)[0]
    for ax, site, matrix in zip(axes, levels, maps, strict=True):
        image = ax.imshow(matrix.numpy(), cmap="coolwarm", norm=norm, aspect="auto")
        ax.set_title(f"pr, level {site.level}")
        ax.set_xticks(range(len(columns)), columns, rotation=90)
        ax.set_yticks(range(matrix.shape[0]), [f"anchor {a}" for a in range(matrix.shape[0])])
    figure.colorbar(image, ax=list(axes), label=f"g ({levels[0].operator})")
    return figure


def plot_prior_factors(site: Site) -> Figure:
    """The effective `g` of one site and the factors its prior builds it from: for `nn` the
    weights `W` (channels x latent) and the latent `z`; for `mf` the bases `Z` (bases x
    channels) and the coefficients `c`; first group only where there are several."""
    factors = prior_factors(site.implicit.prior)
    matrix, vector = {"nn": ("W", "z"), "mf": ("Z", "c")}.get(site.prior, (None, None))
    figure = Figure(figsize=(12, 3), layout="constrained")
    axes = figure.subplots(1, 3 if matrix else 1, squeeze=False)[0]
    axes[0].plot(site.value()[0].numpy(), lw=0.8)
    axes[0].axhline(site.identity, color="k", ls="--", lw=0.6)
    axes[0].set_title(f"g, {_label(site)}, level {site.level}")
    axes[0].set_xlabel("channel")
    if matrix:
        image = axes[1].imshow(factors[matrix][0].numpy(), cmap="coolwarm", aspect="auto")
        figure.colorbar(image, ax=axes[1])
        rows, cols = ("channel", "latent") if site.prior == "nn" else ("basis", "channel")
        axes[1].set_title(f"{matrix} ({rows} x {cols})")
        axes[1].set_xlabel(cols)
        axes[1].set_ylabel(rows)
        axes[2].bar(range(factors[vector].shape[1]), factors[vector][0].numpy())
        axes[2].set_title(vector)
    return figure


def plot_distributions(network: nn.Module, bins: int = 40) -> Figure:
    """Histograms of `g - identity` per site (all levels together): how far and how widely each
    site's implicit knowledge moved away from doing nothing."""
    sites = find_sites(network)
    groups = {
        _label(members[0]): torch.cat([(s.value() - s.identity).flatten() for s in members])
        for name in SITES
        if (members := [s for s in sites if s.name == name])
    }
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    ax = figure.subplots()
    if groups:
        values = torch.cat(list(groups.values()))
        low, high = values.min().item(), values.max().item()
        edges = torch.linspace(low, high, bins + 1).numpy() if high > low else bins
        for label, deltas in groups.items():
            ax.hist(deltas.numpy(), bins=edges, histtype="step", label=label)
        ax.legend(fontsize="small")
    ax.axvline(0, color="k", ls="--", lw=0.6)
    ax.set_xlabel("g - identity")
    ax.set_ylabel("values")
    return figure

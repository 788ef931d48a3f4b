"""Priors `g_φ(z)`: how implicit knowledge is modelled (YOLOR, section 3.2).

A prior is a module without input: calling it returns `g` of shape `[groups, channels]`, i.e.
`groups` independent implicit vectors (one per anchor at the `fa*` and `pr*` sites, else one).
Every prior starts near `identity` (0 for add and concat, 1 for mul) with spread `std`:

- `vector`: `g = z`, one free value per channel;
- `nn`: `g = W z + b`, a latent `z` of `latent_dim` (2C by default) through a linear layer;
- `mf`: `g = Zᵀ c`, K bases `Z` (K = 2C by default) mixed by coefficients `c`, which are free,
  non-negative (`nonneg`, through a softplus) or L1-penalised (`sparse`, see `sparsity_penalty`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COEFFICIENTS: tuple[str, ...] = ("free", "nonneg", "sparse")


class VectorPrior(nn.Module):
    """`g = z`, `z ~ N(identity, std)`."""

    def __init__(self, channels: int, identity: float, std: float = 0.02, groups: int = 1):
        super().__init__()
        self.identity, self.std = identity, std
        self.z = nn.Parameter(torch.empty(groups, channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.z.normal_(self.identity, self.std)

    def forward(self) -> Tensor:
        return self.z


class NNPrior(nn.Module):
    """`g = W z + b` with `z ~ N(0, 1)`, `W ~ N(0, std / sqrt(latent_dim))` and `b = identity`,
    so that each value of `g` starts as `N(identity, std)`."""

    def __init__(
        self,
        channels: int,
        identity: float,
        std: float = 0.02,
        groups: int = 1,
        latent_dim: int | None = None,
    ):
        super().__init__()
        latent_dim = latent_dim or 2 * channels
        self.identity, self.std = identity, std
        self.z = nn.Parameter(torch.empty(groups, latent_dim))
        self.weight = nn.Parameter(torch.empty(groups, channels, latent_dim))
        self.bias = nn.Parameter(torch.empty(groups, channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.z.normal_()
        self.weight.normal_(0, self.std / math.sqrt(self.z.shape[1]))
        self.bias.fill_(self.identity)

    def forward(self) -> Tensor:
        return torch.einsum("gcd,gd->gc", self.weight, self.z) + self.bias


class MFPrior(nn.Module):
    """`g = Zᵀ c`: coefficients start at `1/K` and bases at `N(identity, std·sqrt(K))`, so that
    each value of `g` (a mean of K bases) starts as `N(identity, std)`."""

    def __init__(
        self,
        channels: int,
        identity: float,
        std: float = 0.02,
        groups: int = 1,
        bases: int | None = None,
        coefficients: str = "free",
    ):
        super().__init__()
        if coefficients not in COEFFICIENTS:
            raise ValueError(
                f"unknown mf coefficients {coefficients!r}; allowed: {', '.join(COEFFICIENTS)}"
            )
        num_bases = bases or 2 * channels
        self.coefficient_kind = coefficients
        self.identity, self.std = identity, std
        self.bases = nn.Parameter(torch.empty(groups, num_bases, channels))
        self.raw_coefficients = nn.Parameter(torch.empty(groups, num_bases))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        num_bases = self.bases.shape[1]
        self.bases.normal_(self.identity, self.std * math.sqrt(num_bases))
        start = 1 / num_bases
        if self.coefficient_kind == "nonneg":
            start = math.log(math.expm1(start))  # the softplus inverse: c starts at 1/K
        self.raw_coefficients.fill_(start)

    def coefficients(self) -> Tensor:
        """`c` [groups, K]."""
        if self.coefficient_kind == "nonneg":
            return F.softplus(self.raw_coefficients)
        return self.raw_coefficients

    def forward(self) -> Tensor:
        return torch.einsum("gk,gkc->gc", self.coefficients(), self.bases)


PRIORS: dict[str, type[nn.Module]] = {"vector": VectorPrior, "nn": NNPrior, "mf": MFPrior}


def make_prior(
    name: str,
    channels: int,
    identity: float,
    std: float = 0.02,
    *,
    groups: int = 1,
    latent_dim: int | None = None,
    bases: int | None = None,
    coefficients: str = "free",
) -> nn.Module:
    """The prior `name` (vector | nn | mf) for `groups` x `channels` values starting at
    `identity`. `latent_dim` is read by `nn` only; `bases` and `coefficients` by `mf` only."""
    if name not in PRIORS:
        raise ValueError(f"unknown implicit prior {name!r}; allowed: {', '.join(PRIORS)}")
    options = {
        "vector": {},
        "nn": {"latent_dim": latent_dim},
        "mf": {"bases": bases, "coefficients": coefficients},
    }[name]
    return PRIORS[name](channels, identity, std, groups, **options)


def sparsity_penalty(network: nn.Module) -> Tensor | None:
    """Sum of `|c|` over the `mf` priors with `sparse` coefficients in `network` (None if there
    are none): the L1 term that the training loss adds, times its gain."""
    terms = [
        module.coefficients().abs().sum()
        for module in network.modules()
        if isinstance(module, MFPrior) and module.coefficient_kind == "sparse"
    ]
    return torch.stack(terms).sum() if terms else None

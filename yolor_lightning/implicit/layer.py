"""The Implicit layer `x ⋆ g_φ(z)`, the 1x1 conv it sits next to, and how the two fold into one.

At inference `g_φ(z)` is a constant, so an implicit layer next to a 1x1 convolution (weight `W`,
bias `b`) merges into it:

- add before the conv: `b' = b + W·a`;
- mul before the conv: `W' = W·diag(m)` (scales W's input columns);
- concat before the conv: `b' = b + W_z·z`, and `W` keeps only its feature columns;
- add after the conv: `b' = b + a`;
- mul after the conv: `W' = m⊙W, b' = m⊙b` (an add before it is folded first, then scaled).

With one vector per group of output rows (`groups > 1`, the per-anchor `fa*` site), each group of
rows reads its own copy of the input combined with its own vector, and folds into its own rows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolor_lightning.implicit.operators import IDENTITY, check_operator, combine
from yolor_lightning.implicit.priors import make_prior


class Implicit(nn.Module):
    """`x ⋆ g` for feature maps `x` [B, C, H, W], with `g` from `prior` ([groups, C]).

    `positions` places the prior's values at those channels of a vector of `channels` values
    that is the operator's identity elsewhere (the `pr*` site: only the w, h outputs of each
    anchor). With `groups > 1` the output holds one combined copy of `x` per group,
    [B, groups * C, H, W], the input of a grouped convolution. `site` names where the network
    put the layer (a config key such as `fa` or `task_cls`), for inspection.
    """

    def __init__(
        self,
        operator: str,
        prior: nn.Module,
        positions: Sequence[int] | None = None,
        channels: int | None = None,
        site: str | None = None,
    ):
        super().__init__()
        self.operator = check_operator(operator)
        self.site = site
        self.prior = prior
        self.channels = channels
        self.register_buffer(
            "positions",
            None if positions is None else torch.as_tensor(positions, dtype=torch.long),
            persistent=False,
        )
        self.groups = 1 if positions is not None else prior().shape[0]
        if self.groups > 1 and operator == "concat":
            raise ValueError("concat has one implicit vector, not one per group")

    def value(self) -> Tensor:
        """`g` as the neighbouring convolution sees it: [groups, channels]."""
        g = self.prior()
        if self.positions is None:
            return g
        full = g.new_full((1, self.channels), IDENTITY[self.operator])
        return full.index_copy(1, self.positions, g.reshape(1, -1))

    def forward(self, x: Tensor) -> Tensor:
        g = self.value()
        if self.groups == 1:
            return combine(self.operator, x, g.view(1, -1, 1, 1))
        return combine(self.operator, x.unsqueeze(1), g.view(1, *g.shape, 1, 1)).flatten(1, 2)

    def fold_before(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """`(W', b')` of a 1x1 conv (weight [out, in]) that reads `x` instead of `x ⋆ g`."""
        g = self.value()
        if self.operator == "concat":
            features = weight.shape[1] - g.shape[1]
            return weight[:, :features], bias + weight[:, features:] @ g[0]
        # each group of output rows reads its own `in` values of g: one vector per group of this
        # layer (fa*), or its slice of the channels of a grouped convolution
        g = g.reshape(-1, weight.shape[1])  # [groups, in]
        rows = weight.unflatten(0, (g.shape[0], -1))  # [groups, out / groups, in]
        if self.operator == "add":
            return weight, bias + (rows @ g.unsqueeze(-1)).flatten()
        return (rows * g.unsqueeze(1)).flatten(0, 1), bias

    def fold_after(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """`(W', b')` of a 1x1 conv whose output is `conv(x) ⋆ g`."""
        g = self.value().flatten()
        if self.operator == "add":
            return weight, bias + g
        if self.operator == "mul":
            return weight * g.unsqueeze(1), bias * g
        raise ValueError(f"{self.operator} after a convolution does not fold; use add or mul")


def make_implicit(
    operator: str,
    channels: int,
    prior: str = "vector",
    *,
    groups: int = 1,
    positions: Sequence[int] | None = None,
    site: str | None = None,
    **prior_options: object,
) -> Implicit:
    """An implicit layer over `channels` channels starting at the operator's identity.

    `groups` vectors of `channels` values each, or, with `positions`, `len(positions) / groups`
    values per group placed at those channels (see `Implicit`). `prior_options` go to
    `make_prior` (`std`, `latent_dim`, `bases`, `coefficients`).
    """
    check_operator(operator)
    if positions is None:
        g = make_prior(prior, channels, IDENTITY[operator], groups=groups, **prior_options)
        return Implicit(operator, g, site=site)
    per_group = len(positions) // groups
    g = make_prior(prior, per_group, IDENTITY[operator], groups=groups, **prior_options)
    return Implicit(operator, g, positions=positions, channels=channels, site=site)


class ImplicitConv2d(nn.Module):
    """A 1x1 convolution with implicit layers on its input (`before`, applied in order) and on its
    output (`after`, applied in order).

    Only the last `before` layer may have several groups (one vector per group of output rows);
    the convolution then runs grouped, each group of rows reading its own copy of the input. A
    grouped convolution (`conv.groups > 1`) takes add / mul layers of one group.
    `fold()` returns the equivalent plain `nn.Conv2d`.
    """

    def __init__(
        self, conv: nn.Conv2d, before: Sequence[Implicit] = (), after: Sequence[Implicit] = ()
    ):
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.bias is None:
            raise ValueError("implicit knowledge folds into a 1x1 convolution with a bias")
        if any(implicit.groups > 1 for implicit in before[:-1]):
            raise ValueError("only the implicit layer next to the convolution may be grouped")
        if conv.groups > 1 and any(i.groups > 1 or i.operator == "concat" for i in before):
            raise ValueError(
                "a grouped convolution takes implicit layers of one group and no concat before it"
            )
        self.conv = conv
        self.before = nn.ModuleList(before)
        self.after = nn.ModuleList(after)
        self.groups = before[-1].groups if before and before[-1].groups > 1 else conv.groups

    def forward(self, x: Tensor) -> Tensor:
        for implicit in self.before:
            x = implicit(x)
        y = F.conv2d(x, self.conv.weight, self.conv.bias, groups=self.groups)
        for implicit in self.after:
            y = implicit(y)
        return y

    @torch.no_grad()
    def fold(self) -> nn.Conv2d:
        """The plain 1x1 convolution that computes the same function."""
        weight, bias = self.conv.weight.flatten(1), self.conv.bias
        for implicit in reversed(self.before):
            weight, bias = implicit.fold_before(weight, bias)
        for implicit in self.after:
            weight, bias = implicit.fold_after(weight, bias)
        groups = self.conv.groups
        folded = nn.Conv2d(
            weight.shape[1] * groups,
            weight.shape[0],
            1,
            groups=groups,
            device=weight.device,
            dtype=weight.dtype,
        )
        folded.weight.copy_(weight.view_as(folded.weight))
        folded.bias.copy_(bias)
        return folded


def fold(network: nn.Module) -> nn.Module:
    """A copy of `network` in which every `ImplicitConv2d` is replaced by its folded plain
    convolution: no implicit module or parameter is left, and the cost is the baseline's."""
    folded = copy.deepcopy(network)
    if isinstance(folded, ImplicitConv2d):
        return folded.fold()
    for name, module in list(folded.named_modules()):
        if isinstance(module, ImplicitConv2d):
            folded.set_submodule(name, module.fold())
    return folded

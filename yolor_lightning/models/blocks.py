"""Building blocks of YOLOv4-CSP: Conv-BN-SiLU, bottlenecks, CSP stages and SPPCSP.

Every convolution is followed by batch norm and SiLU, as in YOLOR's `yolov4_csp.cfg` (the darknet
cfg of Scaled-YOLOv4 with Mish replaced by SiLU). Batch-norm settings follow YOLOR's code
(`models/models.py` builds `BatchNorm2d(momentum=0.03, eps=1e-4)`); YOLOv5 / YOLOv9 use eps 1e-3
(`YoloV9Conv`). `use_norm` swaps the batch norm of every Conv block for another normalisation
(`model.norm`, `models.norms`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from yolor_lightning.models.norms import make_norm


class Conv(nn.Sequential):
    """Convolution (no bias) + normalisation + SiLU (or no activation: `activation=False`),
    padded to keep the size at stride 1. Batch norm with YOLOR's eps, unless `use_norm` gave the
    block another normalisation (with the same eps)."""

    norm_eps = 1e-4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ):
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            make_norm("bn", out_channels, self.norm_eps),
            nn.SiLU(inplace=True) if activation else nn.Identity(),
        )

    @property
    def foldable(self) -> bool:
        """Whether the norm folds into the convolution: batch norm does (in eval mode an affine
        map of fixed running statistics); group norm normalises each image by its own
        statistics, so no fixed weights compute it."""
        return isinstance(self[1], nn.modules.batchnorm._BatchNorm)

    @torch.no_grad()
    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(W', b')` of the one biased convolution that computes conv + batch norm (eval mode):
        `W' = W·γ/σ`, `b' = β − μ·γ/σ` with `σ = sqrt(running_var + eps)`."""
        if not self.foldable:
            raise ValueError(
                f"a Conv block with {type(self[1]).__name__} (model.norm=gn) cannot be folded: "
                "group norm normalises each image by its own statistics"
            )
        conv, norm = self[0], self[1]
        scale = norm.weight / (norm.running_var + norm.eps).sqrt()
        return conv.weight * scale.view(-1, 1, 1, 1), norm.bias - norm.running_mean * scale

    def fused(self) -> nn.Sequential:
        """The inference form: one biased convolution (batch norm folded in), then the
        activation."""
        conv = self[0]
        merged = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        weight, bias = self.fused_weights()
        with torch.no_grad():
            merged.weight.copy_(weight)
            merged.bias.copy_(bias)
        return nn.Sequential(merged, self[2])


def use_norm(network: nn.Module, name: str) -> nn.Module:
    """`network` with the normalisation of every Conv block replaced by `name` (`models.norms`:
    bn, gn, syncbn), each with its block's eps; in place (`bn`: as built)."""
    if name == "bn":
        return network
    blocks = [module for module in network.modules() if isinstance(module, Conv)]
    if not blocks:
        raise ValueError(
            f"model.norm={name!r} has no Conv block to normalise in this network (RevCol's "
            "blocks use LayerNorm): use model.norm=bn"
        )
    for block in blocks:
        block[1] = make_norm(name, block[1].num_features, block.norm_eps)
    return network


class Bottleneck(nn.Module):
    """1x1 reduce to `hidden_channels`, 3x3 back to `channels`, optional residual connection."""

    def __init__(self, channels: int, hidden_channels: int, residual: bool = True):
        super().__init__()
        self.reduce = Conv(channels, hidden_channels, 1)
        self.expand = Conv(hidden_channels, channels, 3)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.reduce(x))
        return x + y if self.residual else y


class CSPResidualStage(nn.Module):
    """Backbone CSP stage (`BottleneckCSP`): two 1x1 branches of half width; one runs residual
    bottlenecks and a 1x1 transition, the other passes through; concat and fuse with a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int):
        super().__init__()
        hidden = out_channels // 2
        self.main_in = Conv(in_channels, hidden, 1)
        self.blocks = nn.Sequential(*(Bottleneck(hidden, hidden) for _ in range(repeats)))
        self.main_out = Conv(hidden, hidden, 1)
        self.shortcut = Conv(in_channels, hidden, 1)
        self.fuse = Conv(2 * hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main_out(self.blocks(self.main_in(x)))
        return self.fuse(torch.cat((main, self.shortcut(x)), dim=1))


class CSPPlainStage(nn.Module):
    """Neck CSP stage (`BottleneckCSP2`): a 1x1 reduce to `out_channels`, then split: plain
    (non-residual) bottlenecks on one branch, a 1x1 conv on the other; concat and fuse."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int):
        super().__init__()
        self.reduce = Conv(in_channels, out_channels, 1)
        self.blocks = nn.Sequential(
            *(Bottleneck(out_channels, out_channels, residual=False) for _ in range(repeats))
        )
        self.shortcut = Conv(out_channels, out_channels, 1)
        self.fuse = Conv(2 * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.fuse(torch.cat((self.blocks(x), self.shortcut(x)), dim=1))


class SPPCSP(nn.Module):
    """Spatial pyramid pooling (max-pools 5/9/13, stride 1) inside a CSP split; after the pools'
    concat, `repeats` pairs of 1x1 and 3x3 convs (the first 1x1 reduces the concat)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool_sizes: tuple[int, ...] = (5, 9, 13),
        repeats: int = 1,
    ):
        super().__init__()
        self.main_in = nn.Sequential(
            Conv(in_channels, out_channels, 1),
            Conv(out_channels, out_channels, 3),
            Conv(out_channels, out_channels, 1),
        )
        self.pools = nn.ModuleList(
            nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in pool_sizes
        )
        self.main_out = nn.Sequential(
            *(
                conv
                for i in range(repeats)
                for conv in (
                    Conv((len(pool_sizes) + 1 if i == 0 else 1) * out_channels, out_channels, 1),
                    Conv(out_channels, out_channels, 3),
                )
            )
        )
        self.shortcut = Conv(in_channels, out_channels, 1)
        self.fuse = Conv(2 * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main_in(x)
        main = self.main_out(torch.cat([main, *(pool(main) for pool in self.pools)], dim=1))
        return self.fuse(torch.cat((main, self.shortcut(x)), dim=1))


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channels of the full-size model times `width`, rounded up to a multiple of `divisor`."""
    return max(divisor, math.ceil(channels * width / divisor) * divisor)


def scale_repeats(repeats: int, depth: float) -> int:
    """Block repeats of the full-size model times `depth`, rounded, at least 1."""
    return max(round(repeats * depth), 1)

"""Building blocks of RevCol (megvii-research/RevCol `models/modules.py`, `models/revcol.py`):
the channels-first LayerNorm, the ConvNeXt block with layer scale and drop path, the Fusion of a
column level (down path from the finer level of the same column, up path from the coarser level
of the previous column) and a Level (Fusion, then ConvNeXt blocks).

Convolutions and linear layers start as RevCol's do: truncated normal weights (σ 0.02), zero
biases. Drop path draws its per-sample decisions from a stream of the run's seed
(`yolor_lightning.seeding`), never from the global RNG, so a draw can be replayed exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolor_lightning.seeding import torch_generator

LAYER_NORM_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6
INIT_STD = 0.02


def _trunc_normal_reset(layer: nn.Conv2d | nn.Linear) -> None:
    nn.init.trunc_normal_(layer.weight, std=INIT_STD)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class TruncNormalConv2d(nn.Conv2d):
    """`nn.Conv2d` initialised as RevCol's (`trunc_normal_(std=0.02)`, zero bias)."""

    def reset_parameters(self) -> None:
        _trunc_normal_reset(self)


class TruncNormalLinear(nn.Linear):
    """`nn.Linear` initialised as RevCol's (`trunc_normal_(std=0.02)`, zero bias)."""

    def reset_parameters(self) -> None:
        _trunc_normal_reset(self)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (RevCol's `data_format="channels_first"`)."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: in training, each sample's residual branch is dropped with probability
    `rate` and the kept ones are scaled by 1 / (1 − rate) (timm's `DropPath`).

    The decisions of one forward pass are drawn from the stream
    `("drop path", key, *draw)` of the run's seed: `key` names this module (its path in the
    backbone), `draw` the forward pass (set by the backbone), `seed` comes from
    `seed_draws` (called by `models.initialization.initialize`). Setting `draw` back replays a
    pass exactly, which the reversible backward does when it recomputes a column.
    """

    def __init__(self, rate: float):
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"drop path rate {rate} is outside [0, 1)")
        self.rate = rate
        self.key = ""
        self.seed = 0
        self.draw: tuple[int, ...] = (0,)

    def seed_draws(self, seed: int) -> None:
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        generator = torch_generator(self.seed, "drop path", self.key, *self.draw)
        kept = torch.rand(x.shape[0], generator=generator) < keep
        scale = kept.to(device=x.device, dtype=x.dtype).div_(keep)
        return x * scale.view(-1, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class ConvNeXtBlock(nn.Module):
    """`x + drop_path(γ · Linear(GELU(Linear(LN(dwconv3x3(x))))))`: a depthwise 3×3 conv, a
    LayerNorm and a 4× inverted bottleneck on channels-last maps, layer scale γ (init 1e-6)."""

    def __init__(self, channels: int, drop_path: float = 0.0, kernel_size: int = 3):
        super().__init__()
        self.dwconv = TruncNormalConv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.pwconv1 = TruncNormalLinear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = TruncNormalLinear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.empty(channels))
        self.drop_path = DropPath(drop_path)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The layer scale only: the sub-layers reset their own parameters."""
        nn.init.constant_(self.gamma, LAYER_SCALE_INIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class UpSample(nn.Module):
    """The Fusion's up path: a linear layer to the finer level's channels, LayerNorm, then
    nearest-neighbour upsampling to the finer level's size (×2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = TruncNormalLinear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        y = self.norm(self.linear(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return F.interpolate(y, size=size, mode="nearest")


class Fusion(nn.Module):
    """The input of level `level` of a column: the same column's finer level through the down
    path (2×2 stride-2 conv + LayerNorm; level 0 reads the stem's map as it is) plus, except in
    the first column and at the coarsest level, the previous column's coarser level through the
    up path."""

    def __init__(self, level: int, channels: tuple[int, ...], first_column: bool):
        super().__init__()
        self.down = (
            nn.Sequential(
                TruncNormalConv2d(channels[level - 1], channels[level], 2, stride=2),
                LayerNorm2d(channels[level]),
            )
            if level > 0
            else nn.Identity()
        )
        has_up = not first_column and level < len(channels) - 1
        self.up = UpSample(channels[level + 1], channels[level]) if has_up else None

    def forward(self, finer: torch.Tensor, coarser: torch.Tensor | None) -> torch.Tensor:
        x = self.down(finer)
        if self.up is None:
            return x
        return x + self.up(coarser, x.shape[-2:])


class Level(nn.Module):
    """One level of a column: its Fusion, then ConvNeXt blocks (`drop_paths`: one rate each)."""

    def __init__(
        self,
        level: int,
        channels: tuple[int, ...],
        drop_paths: list[float],
        first_column: bool,
    ):
        super().__init__()
        self.fusion = Fusion(level, channels, first_column)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(channels[level], rate) for rate in drop_paths))

    def forward(self, finer: torch.Tensor, coarser: torch.Tensor | None) -> torch.Tensor:
        return self.blocks(self.fusion(finer, coarser))

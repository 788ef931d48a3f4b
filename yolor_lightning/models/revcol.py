"""RevCol, reversible column networks (Cai et al., ICLR 2023; megvii-research/RevCol
`models/revcol.py`): a patchify stem, then several columns of four levels each (strides 4, 8,
16, 32), column k's level i reading its own level i−1 and column k−1's level i+1, joined by
reversible shortcuts `c'_i = α_i · c_i + L_i(...)`.

As a detection backbone (`revcol`) it gives the last column's levels at strides 8, 16, 32; the
neck (`revcol_fpn`) is the FPN RevCol's detection configs use (mmdet's: 1×1 laterals, top-down
sums, 3×3 outputs, 256 channels), on those three levels. With `reversible` (the default), a
column's backward recomputes its activations from its outputs instead of storing them
(`models.reversible`). `RevColClassifier` is the ImageNet form the official counts are given
for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from yolor_lightning.models.registry import BACKBONES, NECKS
from yolor_lightning.models.revcol_blocks import (
    DropPath,
    LayerNorm2d,
    Level,
    TruncNormalConv2d,
    TruncNormalLinear,
)
from yolor_lightning.models.reversible import ReversibleColumn

ALPHA_INIT = 0.5
ALPHA_MIN = 1e-3  # |α| is kept at least this far from 0: the backward divides by α


@dataclass(frozen=True)
class RevColSize:
    """One RevCol size: channels and ConvNeXt blocks per level, columns, the drop-path rate of
    the deepest block (RevCol's detection configs), and the neck's width."""

    channels: tuple[int, int, int, int]
    layers: tuple[int, int, int, int]
    columns: int
    drop_path: float
    neck_channels: int = 256


REVCOL_SIZES: dict[str, RevColSize] = {
    "mini": RevColSize((16, 32, 64, 128), (1, 1, 2, 1), 4, 0.1, neck_channels=64),
    "t": RevColSize((64, 128, 256, 512), (2, 2, 4, 2), 4, 0.3),
    "s": RevColSize((64, 128, 256, 512), (2, 2, 4, 2), 8, 0.4),
    "b": RevColSize((72, 144, 288, 576), (1, 1, 3, 2), 16, 0.4),
}
"""RevCol-T, S, B as in the official code, and `mini`, a CPU-sized RevCol of this project."""


def revcol_size(size: str | RevColSize) -> RevColSize:
    """The size named `size` (or `size` itself: a RevColSize of one's own)."""
    if isinstance(size, RevColSize):
        return size
    if size not in REVCOL_SIZES:
        raise ValueError(f"unknown RevCol size {size!r}; allowed sizes: {', '.join(REVCOL_SIZES)}")
    return REVCOL_SIZES[size]


class Column(nn.Module):
    """One column (RevCol's `SubNet`): four levels and their shortcut scales `alpha0..alpha3`
    (init 0.5, |α| clamped to at least `ALPHA_MIN` before every forward pass). In the first
    column there is no previous column and the α multiply zero (they exist, as in the official
    model, and get zero gradients)."""

    def __init__(
        self, channels: tuple[int, ...], drop_paths: list[list[float]], first: bool
    ) -> None:
        super().__init__()
        self.first = first
        self.levels = nn.ModuleList(
            Level(i, channels, drop_paths[i], first) for i in range(len(channels))
        )
        for i, c in enumerate(channels):
            setattr(self, f"alpha{i}", nn.Parameter(torch.empty(1, c, 1, 1)))
        self.reset_parameters()

    @property
    def alphas(self) -> list[nn.Parameter]:
        return [getattr(self, f"alpha{i}") for i in range(len(self.levels))]

    def reset_parameters(self) -> None:
        """The shortcut scales only: the levels reset their own parameters."""
        for alpha in self.alphas:
            nn.init.constant_(alpha, ALPHA_INIT)

    @torch.no_grad()
    def clamp_alphas(self) -> None:
        for alpha in self.alphas:
            alpha.copy_(torch.where(alpha < 0, -1.0, 1.0) * alpha.abs().clamp(min=ALPHA_MIN))

    def run(self, x: torch.Tensor, previous: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """The levels, finest first, from the stem's map `x` and the previous column's levels
        (None for the first column), with ordinary autograd."""
        outputs: list[torch.Tensor] = []
        for i, (level, alpha) in enumerate(zip(self.levels, self.alphas, strict=True)):
            finer = x if i == 0 else outputs[-1]
            if previous is None:
                outputs.append(level(finer, None) + alpha * 0)
                continue
            coarser = previous[i + 1] if i + 1 < len(previous) else None
            outputs.append(alpha * previous[i] + level(finer, coarser))
        return outputs

    def forward(
        self, x: torch.Tensor, previous: list[torch.Tensor] | None, reversible: bool = False
    ) -> list[torch.Tensor]:
        """`reversible`: keep only the outputs for the backward pass (`ReversibleColumn`);
        without gradients there is nothing to keep and the ordinary pass runs."""
        self.clamp_alphas()
        if reversible and torch.is_grad_enabled():
            return list(ReversibleColumn.apply(self, x, *(previous or ()), *self.parameters()))
        return self.run(x, previous)


def _process_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class RevColBackbone(nn.Module):
    """RevCol's stem (4×4 stride-4 conv + LayerNorm) and columns; `forward` returns the last
    column's levels at strides 8, 16, 32.

    Every training forward pass is numbered (`forward_passes`, a buffer saved in checkpoints);
    each drop path draws from the stream of its path, that number and the process rank
    (`DropPath`), so a resumed run draws what the uninterrupted one would have."""

    strides: tuple[int, ...] = (8, 16, 32)

    def __init__(
        self, size: str | RevColSize, reversible: bool = True, drop_path: float | None = None
    ):
        super().__init__()
        spec = revcol_size(size)
        self.channels = spec.channels
        self.reversible = reversible
        self.stem = nn.Sequential(
            TruncNormalConv2d(3, spec.channels[0], 4, stride=4), LayerNorm2d(spec.channels[0])
        )
        rate = spec.drop_path if drop_path is None else drop_path
        depth = sum(spec.layers)
        rates = [rate * j / max(depth - 1, 1) for j in range(depth)]  # torch.linspace(0, rate)
        starts = [sum(spec.layers[:i]) for i in range(len(spec.layers))]
        per_level = [rates[s : s + n] for s, n in zip(starts, spec.layers, strict=True)]
        self.columns = nn.ModuleList(
            Column(spec.channels, per_level, first=k == 0) for k in range(spec.columns)
        )
        self.register_buffer("forward_passes", torch.zeros((), dtype=torch.long))
        for path, module in self.named_modules():
            if isinstance(module, DropPath):
                module.key = path
        self.out_channels = spec.channels[1:]

    def columns_forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The last column's four levels (strides 4, 8, 16, 32)."""
        if self.training:
            draw = (int(self.forward_passes), _process_rank())
            self.forward_passes += 1
            for module in self.modules():
                if isinstance(module, DropPath):
                    module.draw = draw
        x = self.stem(images)
        levels = None
        for column in self.columns:
            levels = column(x, levels, self.reversible)
        return levels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.columns_forward(images)[1:]

    def classification_form(self, num_classes: int = 1000) -> RevColClassifier:
        """This backbone with RevCol's ImageNet head: the form the official counts are of."""
        return RevColClassifier(self, num_classes)


@BACKBONES.register("revcol", options=("reversible", "drop_path"), sizes=tuple(REVCOL_SIZES))
def revcol_backbone(size: str, reversible: bool = True, drop_path: float | None = None):
    return RevColBackbone(size, reversible, drop_path)


class RevColClassifier(nn.Module):
    """The ImageNet form of RevCol the official counts are given for (`inter_supv=False`):
    the backbone's last column at stride 32, average-pooled, LayerNorm, linear classifier."""

    def __init__(self, backbone: RevColBackbone, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.norm = nn.LayerNorm(backbone.channels[-1], eps=1e-6)
        self.fc = TruncNormalLinear(backbone.channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        top = self.backbone.columns_forward(images)[-1]
        return self.fc(self.norm(top.mean(dim=(2, 3))))


@NECKS.register("revcol_fpn")
class RevColFPN(nn.Module):
    """FPN as RevCol's detection configs use it (mmdet's `FPN`, without its extra levels): per
    level a 1×1 lateral conv to the neck's width, top-down nearest upsampling and sums, a 3×3
    output conv; returns the maps finest first."""

    def __init__(self, in_channels: tuple[int, ...], size: str):
        super().__init__()
        width = revcol_size(size).neck_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in in_channels)
        self.out_channels = (width,) * len(in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = [lateral(f) for lateral, f in zip(self.lateral, features, strict=True)]
        for i in reversed(range(len(maps) - 1)):
            maps[i] = maps[i] + F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
        return [conv(m) for conv, m in zip(self.output, maps, strict=True)]

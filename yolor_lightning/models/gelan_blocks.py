"""Building blocks of GELAN (YOLOv9's network, WongKinYiu/yolov9 `models/common.py`):
RepConvN, RepNCSP, RepNCSPELAN4, ELAN1, SPPELAN and the two downsamplers AConv and ADown.

Argument names follow the official blocks: `c1` input channels, `c2` output channels, `c3` the
width of the ELAN split, `c4` the width of each ELAN branch, `repeats` the RepNCSP depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolor_lightning.models.blocks import Conv


class YoloV9Conv(Conv):
    """Conv-BN-SiLU with YOLOv9's batch-norm eps (1e-3, set by its `initialize_weights`)."""

    norm_eps = 1e-3


class RepConvN(nn.Module):
    """`SiLU(BN(conv3x3(x)) + BN(conv1x1(x)))` in training; one 3x3 convolution at inference
    (`fused`: the 1x1 kernel padded into the centre of the 3x3 one, batch norms folded)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.dense = YoloV9Conv(c1, c2, 3, activation=False)
        self.pointwise = YoloV9Conv(c1, c2, 1, activation=False)
        self.activation = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x) + self.pointwise(x))

    @property
    def foldable(self) -> bool:
        """Whether both branches' norms fold (batch norm; not group norm)."""
        return self.dense.foldable and self.pointwise.foldable

    @torch.no_grad()
    def fused(self) -> nn.Sequential:
        merged = self.dense.fused()
        weight, bias = self.pointwise.fused_weights()
        merged[0].weight.add_(F.pad(weight, [1, 1, 1, 1]))
        merged[0].bias.add_(bias)
        return nn.Sequential(merged[0], self.activation)


class RepNBottleneck(nn.Module):
    """RepConvN then a 3x3 conv, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.cv1 = RepConvN(channels, channels)
        self.cv2 = YoloV9Conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class RepNCSP(nn.Module):
    """CSP split of half width: RepN bottlenecks on one branch, a 1x1 conv on the other."""

    def __init__(self, c1: int, c2: int, repeats: int = 1):
        super().__init__()
        hidden = c2 // 2
        self.cv1 = YoloV9Conv(c1, hidden, 1)
        self.cv2 = YoloV9Conv(c1, hidden, 1)
        self.cv3 = YoloV9Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(RepNBottleneck(hidden) for _ in range(repeats)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class ELANBlock(nn.Module):
    """The ELAN aggregation: a 1x1 conv to `c3` split in two halves, two branches applied one
    after the other on the second half, all four maps concatenated and fused by a 1x1 conv."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, branch2: nn.Module, branch3: nn.Module):
        super().__init__()
        self.cv1 = YoloV9Conv(c1, c3, 1)
        self.cv2 = branch2
        self.cv3 = branch3
        self.cv4 = YoloV9Conv(c3 + 2 * c4, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


class RepNCSPELAN4(ELANBlock):
    """GELAN's main block: ELAN whose branches are RepNCSP + 3x3 conv."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, repeats: int = 1):
        super().__init__(
            c1,
            c2,
            c3,
            c4,
            nn.Sequential(RepNCSP(c3 // 2, c4, repeats), YoloV9Conv(c4, c4, 3)),
            nn.Sequential(RepNCSP(c4, c4, repeats), YoloV9Conv(c4, c4, 3)),
        )


class ELAN1(ELANBlock):
    """The light ELAN of GELAN-T/S: plain 3x3 convs as branches."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int):
        super().__init__(c1, c2, c3, c4, YoloV9Conv(c3 // 2, c4, 3), YoloV9Conv(c4, c4, 3))


class SPPELAN(nn.Module):
    """Spatial pyramid pooling, ELAN style: a 1x1 conv to `c3`, three chained 5x5 max-pools,
    the four maps concatenated and fused by a 1x1 conv."""

    def __init__(self, c1: int, c2: int, c3: int):
        super().__init__()
        self.cv1 = YoloV9Conv(c1, c3, 1)
        self.pool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)
        self.cv5 = YoloV9Conv(4 * c3, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv5(torch.cat(y, 1))


class AConv(nn.Module):
    """Stride-2 downsampling: a 2x2 stride-1 average pool, then a 3x3 stride-2 conv."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = YoloV9Conv(c1, c2, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv1(F.avg_pool2d(x, 2, 1, 0))


class ADown(nn.Module):
    """Stride-2 downsampling of GELAN-C/E: after a 2x2 stride-1 average pool, half the channels
    go through a 3x3 stride-2 conv, the other half through a 3x3 stride-2 max-pool and a 1x1
    conv."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = YoloV9Conv(c1 // 2, c2 // 2, 3, stride=2)
        self.cv2 = YoloV9Conv(c1 // 2, c2 // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = F.avg_pool2d(x, 2, 1, 0).chunk(2, 1)
        return torch.cat((self.cv1(x1), self.cv2(F.max_pool2d(x2, 3, 2, 1))), 1)

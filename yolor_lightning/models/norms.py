"""The normalisation layer of the Conv blocks by name (`model.norm`): `bn` (batch norm, YOLOR's),
`gn` (group norm: statistics of each image, for per-GPU batches too small for batch statistics)
or `syncbn` (batch norm with statistics over all the processes of a DDP run).

`make_norm` builds one; `yolor_lightning.models.blocks.use_norm` gives every Conv block of a
network the chosen one.
"""

from __future__ import annotations

from torch import nn

NORMS = ("bn", "gn", "syncbn")
BN_MOMENTUM = 0.03  # YOLOR's models/models.py: BatchNorm2d(momentum=0.03)
MAX_GROUPS = 32  # group norm's default (Wu & He 2018)
MIN_GROUP_CHANNELS = 2  # one channel per group is instance norm, Wu & He's worst group size


def group_count(channels: int) -> int:
    """Group norm's groups for `channels`: the most groups, at most `MAX_GROUPS`, that divide
    the channels into groups of at least `MIN_GROUP_CHANNELS` (32 from 64 channels on when 32
    divides them; 8 -> 4, 24 -> 12, 48 -> 24, 96 -> 32 groups)."""
    most = max(min(MAX_GROUPS, channels // MIN_GROUP_CHANNELS), 1)
    return next(groups for groups in range(most, 0, -1) if channels % groups == 0)


def make_norm(name: str, channels: int, eps: float) -> nn.Module:
    """The normalisation `name` (one of `NORMS`) of `channels` channels with `eps`."""
    if name == "bn":
        return nn.BatchNorm2d(channels, eps=eps, momentum=BN_MOMENTUM)
    if name == "syncbn":
        return nn.SyncBatchNorm(channels, eps=eps, momentum=BN_MOMENTUM)
    if name == "gn":
        return nn.GroupNorm(group_count(channels), channels, eps=eps)
    raise ValueError(f"model.norm={name!r} is unknown: allowed values are {', '.join(NORMS)}")

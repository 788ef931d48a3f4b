"""The training data order and each sample's augmentation stream, derived from the run's seed.

:class:`SeededSampler` draws each epoch's order from the stream ``("data order", epoch)`` of the
run's seed and gives every sample of that order its own augmentation seed, from the stream
``("augment", epoch, position)``. The dataset draws the sample's mosaic partners and every
augmentation parameter from a generator seeded with it (a mixup from the stream ``"mixup"`` of
it, so that the sample's other draws are the same with and without mixup). So a seed fixes the
batches, whatever the network, the number of DataLoader workers (which worker loads a sample
does not matter), the number of processes (a rank takes every ``world``-th position of the same
order) or a resume (an epoch's order and augmentations depend on its number only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, DistributedSampler

from yolor_lightning.seeding import stream_seed, torch_generator


class SampleKey(NamedTuple):
    """What a training dataset is indexed with: the sample and the seed of its augmentations."""

    index: int
    seed: int


class SeededSampler(DistributedSampler):
    """Yields :class:`SampleKey` in an order drawn from ``seed`` and the epoch.

    A ``DistributedSampler`` so that Lightning uses it as it is in a distributed run (it replaces
    other samplers with its own); ``num_replicas`` and ``rank`` default to the process group's
    (one process when there is none).
    Like ``DistributedSampler``, the order is padded with its first samples to a multiple of the
    number of processes, so every rank takes as many steps.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed:
            num_replicas, rank = num_replicas or 1, rank or 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def __iter__(self) -> Iterator[SampleKey]:
        generator = torch_generator(self.seed, "data order", self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        order = (order * math.ceil(self.total_size / len(order)))[: self.total_size]
        for position in range(self.rank, self.total_size, self.num_replicas):
            yield SampleKey(
                order[position], stream_seed(self.seed, "augment", self.epoch, position)
            )

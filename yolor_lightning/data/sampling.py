"""The training data order and each sample's augmentation stream, derived from the run's seed.

:class:`SeededSampler` draws each epoch's order from the stream ``("data order", epoch)`` of the
run's seed and gives every sample of that order its own augmentation seed, from the stream
``("augment", epoch, position)``. The dataset draws the sample's mosaic partners and every
augmentation parameter from a generator seeded with it (a mixup from the stream ``"mixup"`` of
it, so that the sample's other draws are the same with and without mixup). So a seed fixes the
batches, whatever the network, the number of DataLoader workers (which worker loads a sample
does not matter), the number of processes (a rank takes every ``world``-th position of the same
order) or a resume (an epoch's order and augmentations depend on its number only).

:class:`IdentityBalancedSampler` (``data.sampler=pk``) orders an epoch in P x K groups for the
emb task (P identities, K images of each) under the same rules: each group is drawn from its own
stream ``("identity groups", epoch, group)``, each position's augmentation seed as above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PKBatch:
    """The shape of a ``data.sampler=pk`` batch; the field names are the ``data.pk`` keys."""

    identities: int = 4  # P
    instances: int = 4  # K: images of each identity


SAMPLERS = ("shuffle", "pk")
"""The training samplers (``data.sampler``): ``shuffle`` (:class:`SeededSampler`, every image once
per epoch) and ``pk`` (:class:`IdentityBalancedSampler`, P identities x K images per batch)."""


class IdentityBalancedSampler(SeededSampler):
    """P x K batches for the emb task's batch-hard mining: each group of ``identities * instances``
    consecutive keys holds ``identities`` (P) identities with ``instances`` (K) images each.

    The unit balanced is an image that contains the identity (``identity_images``: identity ->
    indices of the images with a non-crowd object of it), placed as the sample's own image. An
    image holds several objects, so a group holds other identities too; a mosaic adds three
    partner images, drawn from the sample's augmentation seed as with :class:`SeededSampler`
    (same position, same partners and augmentation), so they add random identities on top.

    Group ``g`` of an epoch draws from the stream ``("identity groups", epoch, g)``: P distinct
    identities, then for each K of its images not yet in the group, in a random order. An
    identity with fewer such images repeats its images (drawn with replacement among all of
    them) up to K; the repeated samples differ by their augmentation (own seed: mosaic
    partners, flips, colours). Key ``slot`` of group ``g`` is position ``g * P * K + slot`` of
    the epoch, whose augmentation seed is ``("augment", epoch, position)`` as in the default
    order. An epoch has ``ceil(len(dataset) / (P * K))`` groups (as many steps as the default
    sampler at a batch of P x K), rounded up to a multiple of the number of processes; rank
    ``r`` takes groups ``r, r + world, ...``, so ranks hold disjoint groups and a batch of
    P x K keys is one whole group.
    """

    def __init__(
        self,
        dataset: Dataset,
        identity_images: Mapping[int, Sequence[int]],
        identities: int,
        instances: int,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        super().__init__(dataset, seed, num_replicas=num_replicas, rank=rank)
        for key, value in (("identities", identities), ("instances", instances)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.pk.{key}={value!r} is invalid: must be an integer >= 1")
        self.images_of = {
            int(identity): torch.tensor(sorted(set(images)), dtype=torch.int64)
            for identity, images in sorted(identity_images.items())
            if len(images)
        }
        if len(self.images_of) < identities:
            raise ValueError(
                f"data.pk.identities={identities} is invalid: the training split has "
                f"{len(self.images_of)} identities with images (data.identity_key), fewer than "
                "the P identities a batch needs"
            )
        self.identities, self.instances = identities, instances
        self.group_size = identities * instances
        groups = math.ceil(len(dataset) / self.group_size)
        self.num_groups = math.ceil(groups / self.num_replicas) * self.num_replicas
        self.num_samples = self.num_groups // self.num_replicas * self.group_size
        self.total_size = self.num_groups * self.group_size

    def group(self, number: int) -> list[tuple[int, int]]:
        """Group ``number`` of the current epoch: ``(identity, image index)`` per slot, P blocks
        of K slots, one block per identity."""
        generator = torch_generator(self.seed, "identity groups", self.epoch, number)
        known = list(self.images_of)
        picked = torch.randperm(len(known), generator=generator)[: self.identities].tolist()
        slots: list[tuple[int, int]] = []
        taken: set[int] = set()
        for identity in (known[i] for i in picked):
            images = self.images_of[identity]
            order = images[torch.randperm(len(images), generator=generator)].tolist()
            block = [index for index in order if index not in taken][: self.instances]
            repeats = torch.randint(
                len(images), (self.instances - len(block),), generator=generator
            )
            block += images[repeats].tolist()
            taken.update(block)
            slots += [(identity, index) for index in block]
        return slots

    def __iter__(self) -> Iterator[SampleKey]:
        for number in range(self.rank, self.num_groups, self.num_replicas):
            for slot, (_, index) in enumerate(self.group(number)):
                position = number * self.group_size + slot
                yield SampleKey(index, stream_seed(self.seed, "augment", self.epoch, position))


def make_train_sampler(
    name: str,
    dataset: Dataset,
    seed: int,
    identity_images: Callable[[], Mapping[int, Sequence[int]]],
    pk: PKBatch,
) -> SeededSampler:
    """The training sampler ``name`` (:data:`SAMPLERS`); ``identity_images`` is called for
    ``pk`` only (it reads the split's identities)."""
    if name == "shuffle":
        return SeededSampler(dataset, seed)
    if name == "pk":
        return IdentityBalancedSampler(
            dataset, identity_images(), pk.identities, pk.instances, seed
        )
    raise ValueError(f"data.sampler={name!r} is unknown: allowed values are {list(SAMPLERS)}")

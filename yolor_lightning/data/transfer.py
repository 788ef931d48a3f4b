"""How a batch crosses from a DataLoader worker to the training process: its small tensors packed
into one buffer per dtype.

torch sends every tensor a worker returns as its own shared-memory file descriptor, and the
receiving process pays a socket round trip to take each one over, about half a millisecond. A
validation batch of 16 images carries about 100 small tensors (each image's targets and original
annotations): in a profile of the default run's validation, taking them over cost 2.8 s per
1,000 images, nearly as much as the COCO evaluation (3.4 s). :class:`PackedBatch` sends the
images as they are and every other tensor as a slice of one flat buffer per dtype; unpickling it
rebuilds the batch as the plain structure, each small tensor a view into its buffer, so the code
that reads batches never sees the packing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

UNPACKED_KEYS = ("images",)
"""Top-level batch entries sent as they are: one large tensor each."""


class Slot(NamedTuple):
    """Where a packed tensor lies: its buffer (by dtype), first element and shape."""

    dtype: torch.dtype
    start: int
    shape: tuple[int, ...]


def _skeleton(
    value: Any, buffers: dict[torch.dtype, list[Tensor]], sizes: dict[torch.dtype, int]
) -> Any:
    """``value`` with every tensor replaced by its :class:`Slot`, the tensors appended to
    ``buffers`` (``sizes`` counts each dtype's elements so far)."""
    if isinstance(value, Tensor):
        flat = value.detach().as_subclass(Tensor).reshape(-1)
        start = sizes.get(value.dtype, 0)
        buffers.setdefault(value.dtype, []).append(flat)
        sizes[value.dtype] = start + flat.numel()
        return Slot(value.dtype, start, tuple(value.shape))
    if isinstance(value, dict):
        return {key: _skeleton(item, buffers, sizes) for key, item in value.items()}
    if isinstance(value, list):
        return [_skeleton(item, buffers, sizes) for item in value]
    if type(value) is tuple:  # named tuples and other records are sent as they are
        return tuple(_skeleton(item, buffers, sizes) for item in value)
    return value


def _filled(skeleton: Any, buffers: dict[torch.dtype, Tensor]) -> Any:
    """The structure ``skeleton`` describes, each :class:`Slot` a view into its buffer."""
    if isinstance(skeleton, Slot):
        count = math.prod(skeleton.shape)
        flat = buffers[skeleton.dtype][skeleton.start : skeleton.start + count]
        return flat.view(skeleton.shape)
    if isinstance(skeleton, dict):
        return {key: _filled(item, buffers) for key, item in skeleton.items()}
    if isinstance(skeleton, list):
        return [_filled(item, buffers) for item in skeleton]
    if type(skeleton) is tuple:
        return tuple(_filled(item, buffers) for item in skeleton)
    return skeleton


def unpacked_batch(skeleton: dict[str, Any], buffers: dict[torch.dtype, Tensor]) -> dict[str, Any]:
    """The batch a :class:`PackedBatch` was made from (unpickling calls this)."""
    return _filled(skeleton, buffers)


class PackedBatch:
    """A collated batch (a dict) that pickles as its large entries plus one buffer per dtype."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch

    def __reduce__(self) -> tuple[Callable[..., dict[str, Any]], tuple]:
        parts: dict[torch.dtype, list[Tensor]] = {}
        sizes: dict[torch.dtype, int] = {}
        skeleton = {
            key: value if key in UNPACKED_KEYS else _skeleton(value, parts, sizes)
            for key, value in self.batch.items()
        }
        buffers = {dtype: torch.cat(tensors) for dtype, tensors in parts.items()}
        return unpacked_batch, (skeleton, buffers)


def packed_in_workers(samples: list[Any], collate: Callable[[list[Any]], dict]) -> Any:
    """``collate(samples)``, as a :class:`PackedBatch` when a DataLoader worker runs it (the
    main process unpickles it back into the plain batch; without workers nothing is pickled)."""
    batch = collate(samples)
    return PackedBatch(batch) if get_worker_info() is not None else batch

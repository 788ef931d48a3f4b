"""Random streams derived from a run's seed, one per purpose.

Every random draw of a run comes from a stream named by the run's seed and its purpose (the
weights of one module, the data order of one epoch, the augmentation of one sample), never from
the global RNG state. So two configurations with the same seed draw the same numbers wherever
they share a purpose: the same initial weights for the layers they share, the same data order and
the same augmentations. Ablations are paired by seed.
"""

from __future__ import annotations

import hashlib

import torch

SEED_BITS = 63  # torch.Generator.manual_seed takes a signed 64-bit integer


def stream_seed(seed: int, *purpose: str | int) -> int:
    """A 63-bit seed for the stream ``purpose`` of the run seeded with ``seed``.

    A hash of both (SHA-256 of their text), so nearby seeds and purposes give unrelated streams
    and the result does not depend on the Python process (``hash()`` of a str does).
    """
    text = "/".join(str(part) for part in (int(seed), *purpose))
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> (64 - SEED_BITS)


def torch_generator(seed: int, *purpose: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` for the stream ``purpose`` of ``seed``."""
    return torch.Generator().manual_seed(stream_seed(seed, *purpose))

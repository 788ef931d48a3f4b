"""Checkpoints written atomically: a crash mid-write never leaves a truncated file."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from yolor_lightning.atomic import atomic_path


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`~yolor_lightning.atomic.atomic_path`."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with :func:`atomic_torch_save`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, path)

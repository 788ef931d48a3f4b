"""Checkpoints written atomically (a crash mid-write never leaves a truncated file) and read
safely (:func:`yolor_lightning.checkpoints.load_checkpoint`: no code in them runs)."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from yolor_lightning.atomic import atomic_path
from yolor_lightning.checkpoints import load_checkpoint


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`~yolor_lightning.atomic.atomic_path`."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with :func:`atomic_torch_save` and, for every checkpoint the
    Trainer reads (``ckpt_path`` of fit, validate, test), the project's safe loader."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        """``weights_only`` is always on, whatever the caller asks."""
        return load_checkpoint(path, map_location=map_location)

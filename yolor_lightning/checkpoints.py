"""Reading checkpoints without running code from them.

Every checkpoint the project reads (resume, validation of the best checkpoint, evaluate, export,
:func:`~yolor_lightning.export.load_folded`, the analysis API and its notebook) is read by
:func:`load_checkpoint`: ``torch.load(weights_only=True)``, whose unpickler builds tensors,
primitive containers and the globals torch allows by default, plus :data:`ALLOWED_GLOBALS`, and
refuses any other global *before* calling it. A pickled call (``os.system``, ``exec``, ...) in a
crafted .ckpt is refused with :class:`UnsafeCheckpointError`; nothing in it runs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from yolor_lightning.tasks.unified import UnifiedModule

ALLOWED_GLOBALS: tuple[Any, ...] = ()
"""Globals the project's own checkpoints need beyond torch's defaults. None today: the
hyper-parameters are saved as plain dicts, lists, strings and numbers (``config.plain``), RNG
states as tensors; ``tests/test_faults_security.py`` checks a real checkpoint against this list.
Add a type here only if it is safe to build from untrusted data (no code runs on construction)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that holds something other than tensors and plain data."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The contents of checkpoint ``path``, read with ``weights_only=True``; raises
    :class:`UnsafeCheckpointError`, naming the file and the refused globals, for anything
    beyond tensors, plain data and :data:`ALLOWED_GLOBALS`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(f"{path}: refused to load: {_refusal(path, err)}") from None


def _refusal(path: Path, err: pickle.UnpicklingError) -> str:
    """Why ``path`` was refused: the globals it would call or build, else torch's reason."""
    try:
        refused = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:  # the legacy (non-zip) format cannot be scanned
        refused = []
    if not refused:
        return str(err).strip().splitlines()[0]
    return (
        f"it holds the disallowed global(s) {', '.join(refused)}; a checkpoint may hold only "
        "tensors and plain data (dicts, lists, strings, numbers), so a crafted file cannot run "
        "code when loaded"
    )


def module_from_checkpoint(checkpoint: dict[str, Any]) -> UnifiedModule:
    """The LightningModule of a loaded training checkpoint, built from its hyper-parameters,
    with its weights (this project's checkpoints hold the EMA weights)."""
    module = UnifiedModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    return module

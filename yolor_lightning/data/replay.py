"""An evaluation split's batches loaded once and replayed from memory at every later pass.

An evaluation split is served without augmentation and in a fixed order, so every validation
loads the very same batches. Loading them again costs more than the loading itself: the
loader's workers preempt the network's threads at every batch, and on 2 CPU cores the validation
forward took 1.5x as long beside them as on batches held in memory
(``benchmarks/validation_parts.py``). A split whose images fit the memory budget
(``data.val_cache_mb``) is therefore loaded once, by the workers as before, and replayed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class ReplayedBatches:
    """``loader``'s batches as it yields them on its first complete pass (all ``len(loader)``
    of them); later passes replay them without loading. A pass stopped early (a sanity check,
    ``limit_val_batches``) keeps nothing, so the next pass loads again."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self._batches: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if self._batches is not None:
            yield from self._batches
            return
        batches = []
        for batch in self.loader:
            batches.append(batch)
            # Lightning stops after len() batches without asking for one more
            if len(batches) == len(self.loader):
                self._batches = batches
            yield batch


def image_bytes(num_images: int, image_size: int) -> int:
    """Memory the split's batched images take: 3 channels of 8 bits at ``image_size``²."""
    return num_images * 3 * image_size * image_size

"""An evaluation split's batches loaded once, in the background, and replayed from memory.

An evaluation split is served without augmentation and in a fixed order, so every validation
loads the very same batches. Loading them again costs more than the loading itself: the
loader's workers preempt the network's threads at every batch, and on 2 CPU cores the validation
forward took 1.5x as long beside them as on batches held in memory
(``benchmarks/validation_parts.py``). A split whose images fit the memory budget
(``data.val_cache_mb``) is therefore loaded once and replayed.

It is loaded from the moment the DataModule hands it out (the sanity check at the start of a
fit), on a background thread fed by the loader's workers: while the network trains on one
thread beside the training loader, the workers find most of a core idle (the training loader
takes about 12% of it), so the first validation also finds its batches in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader


class ReplayedBatches:
    """All ``len(loader)`` batches of one pass of ``loader``, loaded by a background thread from
    construction on; every pass yields them in order, waiting for those not loaded yet. An error
    in the loading is raised in the pass that reaches the batch it stopped at."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self._batches: list[Any] = []
        self._finished = False
        self._error: BaseException | None = None
        self._loaded = threading.Condition()
        # the workers start here, on the calling thread, not on the background one
        batches = iter(loader)
        threading.Thread(target=self._load, args=(batches,), name="replay", daemon=True).start()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self)):
            yield self._batch(index)

    @property
    def complete(self) -> bool:
        """Whether every batch is in memory."""
        with self._loaded:
            return len(self._batches) == len(self)

    def _batch(self, index: int) -> Any:
        with self._loaded:
            self._loaded.wait_for(lambda: index < len(self._batches) or self._finished)
            if index < len(self._batches):
                return self._batches[index]
            if self._error is not None:
                raise self._error
            raise RuntimeError(
                f"the loader yielded {len(self._batches)} batches, not the {len(self)} of its len()"
            )

    def _load(self, batches: Iterable[Any]) -> None:
        try:
            for batch in batches:
                with self._loaded:
                    self._batches.append(batch)
                    self._loaded.notify_all()
        except BaseException as error:  # raised to the pass that waits for the missing batch
            self._error = error
        finally:
            with self._loaded:
                self._finished = True
                self._loaded.notify_all()


def image_bytes(num_images: int, image_size: int) -> int:
    """Memory the split's batched images take: 3 channels of 8 bits at ``image_size``²."""
    return num_images * 3 * image_size * image_size

"""Batches served by DataLoader workers: the same as without workers, their small tensors sent in
one buffer per dtype instead of one shared-memory file each."""

import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing  # registers torch's shared-memory reductions with ForkingPickler
from hydra.utils import instantiate
from omegaconf import OmegaConf

from yolor_lightning.config import compose_config
from yolor_lightning.data.shapes import ShapesConfig, ensure_shapes
from yolor_lightning.data.transfer import PackedBatch

TINY = {"num_train": 12, "num_val": 6}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    ensure_shapes(root, ShapesConfig(**TINY), workers=1)
    return root


def first_batches(root: Path, num_workers: int) -> dict[str, dict]:
    """The first training and validation batch, with every target, from ``num_workers``."""
    data = OmegaConf.merge(
        compose_config(["data=shapes"]).data,
        {"root": str(root), "shapes": TINY, "batch_size": 4, "num_workers": num_workers},
    )
    datamodule = instantiate(data, targets=["det", "cls", "emb"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    return {
        "train": next(iter(datamodule.train_dataloader())),
        "val": next(iter(datamodule.val_dataloader())),
    }


def assert_same(served: Any, expected: Any, where: str = "batch") -> None:
    """Equal structure, container types, tensor dtypes, shapes and values."""
    assert type(served) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert served.dtype == expected.dtype and served.shape == expected.shape, where
        assert torch.equal(served, expected), where
    elif isinstance(expected, dict):
        assert list(served) == list(expected), where
        for key in expected:
            assert_same(served[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(served) == len(expected), where
        for index, (a, b) in enumerate(zip(served, expected, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert served == expected, where


def small_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor of a batch but its images."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key, item in value.items() if key != "images" for t in small_tensors(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in small_tensors(item)]
    return []


@pytest.fixture(scope="module")
def plain(shapes_root) -> dict[str, dict]:
    return first_batches(shapes_root, num_workers=0)


def test_a_packed_batch_unpickles_into_the_batch_it_was_made_from(plain):
    for split, batch in plain.items():
        assert len(small_tensors(batch)) > 10  # targets, identities, gt: many small tensors
        crossed = pickle.loads(ForkingPickler.dumps(PackedBatch(batch)))
        assert_same(crossed, batch, split)


@pytest.mark.slow
def test_worker_batches_equal_the_main_process_ones_in_one_buffer_per_dtype(shapes_root, plain):
    served = first_batches(shapes_root, num_workers=1)
    for split, batch in served.items():
        assert_same(batch, plain[split], split)
        tensors = small_tensors(batch)
        buffers = {t.untyped_storage().data_ptr() for t in tensors}
        assert len(buffers) == len({t.dtype for t in tensors}) < len(tensors), split
        assert batch["images"].untyped_storage().data_ptr() not in buffers

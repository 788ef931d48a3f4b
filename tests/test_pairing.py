"""Runs are paired by seed: configurations that share a module or the data start from the same
weights and see the same batches, whatever the number of DataLoader workers."""

from __future__ import annotations

import csv

import pytest
import torch

from yolor_lightning.checkpoints import load_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.data.sampling import SeededSampler
from yolor_lightning.models.initialization import init_keys, initialize
from yolor_lightning.seeding import stream_seed
from yolor_lightning.train import build_datamodule, build_module, train

PAIRED_EXPERIMENTS = ("ifa_add", "ifa_cat", "ipr_mul", "jdc")
SMALL_DATA = [
    "data.shapes.num_train=24",
    "data.shapes.num_val=8",
    "data.shapes.image_size=96",
    "data.image_size=96",
    "data.batch_size=6",
]


def weights_by_key(experiment: str, seed: int = 3) -> dict[str, dict[str, torch.Tensor]]:
    """The initial parameters of ``experiment``'s module, grouped by their stream's key."""
    module = build_module(compose_config([f"+experiment={experiment}", f"seed={seed}"]))
    return {
        key: {name: p.detach().clone() for name, p in child.named_parameters(recurse=False)}
        for key, child in init_keys(module).items()
    }


def same_shapes(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[name].shape == b[name].shape for name in a)


@pytest.fixture(scope="module")
def baseline_weights() -> dict[str, dict[str, torch.Tensor]]:
    return weights_by_key("baseline")


@pytest.mark.parametrize("experiment", PAIRED_EXPERIMENTS)
def test_one_seed_gives_bit_identical_weights_to_the_modules_configurations_share(
    experiment, baseline_weights
):
    weights = weights_by_key(experiment)
    shared = [
        k for k in baseline_weights if k in weights and same_shapes(baseline_weights[k], weights[k])
    ]
    # everything but the prediction convs an fa concat widens is shared
    assert len(shared) >= len(baseline_weights) - 3
    assert any(key.startswith("network.heads.det.predictors") for key in shared) or (
        experiment == "ifa_cat"
    )
    for key in shared:
        for name, tensor in baseline_weights[key].items():
            assert torch.equal(weights[key][name], tensor), f"{experiment}: {key}.{name} differs"
    extra = [key for key in weights if key not in baseline_weights]
    assert extra, f"{experiment} adds no module"
    for key in extra:  # implicit layers (around a prediction conv) or the cls head
        assert ".before." in key or ".after." in key or key.startswith("network.heads.cls"), key


def test_another_seed_draws_other_weights(baseline_weights):
    other = weights_by_key("baseline", seed=4)
    for key, weights in baseline_weights.items():
        if "weight" in weights and weights["weight"].dim() == 4:  # every conv: a random draw
            assert not torch.equal(other[key]["weight"], weights["weight"]), key


def test_initialize_leaves_the_global_rng_alone_and_repeats_itself():
    module = build_module(compose_config(["+experiment=ifa_mul"]))
    before = [p.detach().clone() for p in module.parameters()]
    state = torch.get_rng_state()
    initialize(module, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def first_batch(
    experiment: str, num_workers: int = 0, seed: int = 5, overrides: tuple[str, ...] = ()
) -> dict:
    cfg = compose_config(
        [
            f"+experiment={experiment}",
            f"seed={seed}",
            f"data.num_workers={num_workers}",
            *SMALL_DATA,
            *overrides,
        ]
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    return next(iter(loader))


def assert_same_batch(a: dict, b: dict) -> None:
    assert torch.equal(a["images"], b["images"])
    assert [m["image_id"] for m in a["meta"]] == [m["image_id"] for m in b["meta"]]
    assert [m["tiles"] for m in a["meta"]] == [m["tiles"] for m in b["meta"]]
    for x, y in zip(a["targets"], b["targets"], strict=True):
        assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])


@pytest.fixture(scope="module")
def baseline_batch() -> dict:
    return first_batch("baseline")


@pytest.mark.parametrize("experiment", PAIRED_EXPERIMENTS)
def test_one_seed_serves_identical_batches_to_every_configuration(experiment, baseline_batch):
    batch = first_batch(experiment)
    assert_same_batch(batch, baseline_batch)
    assert any(len(m["tiles"]) == 4 for m in batch["meta"]), "no mosaic in the batch"


def test_mixup_draws_from_its_own_stream_and_leaves_the_samples_other_draws_paired(
    baseline_batch,
):
    mixed = first_batch("mixup", overrides=("data.augment.mixup=1.0",))
    tiles = [m["tiles"] for m in mixed["meta"]]
    assert [t[:4] for t in tiles] == [m["tiles"] for m in baseline_batch["meta"]]
    assert all(len(t) == 8 for t in tiles), "a mosaic was not mixed up at mixup=1"
    assert [m["image_id"] for m in mixed["meta"]] == [m["image_id"] for m in baseline_batch["meta"]]
    assert not torch.equal(mixed["images"], baseline_batch["images"])
    for own, base in zip(mixed["targets"], baseline_batch["targets"], strict=True):
        n = len(base["labels"])  # the sample's own boxes first, flipped as without mixup
        assert torch.equal(own["boxes"][:n], base["boxes"])
        assert torch.equal(own["labels"][:n], base["labels"])
    count = sum(len(t["labels"]) for t in mixed["targets"])
    assert count > sum(len(t["labels"]) for t in baseline_batch["targets"])
    assert_same_batch(first_batch("mixup", overrides=("data.augment.mixup=1.0",)), mixed)
    other = first_batch("mixup", seed=6, overrides=("data.augment.mixup=1.0",))
    assert [m["tiles"][4:] for m in other["meta"]] != [t[4:] for t in tiles]


@pytest.mark.slow
def test_the_batches_do_not_depend_on_the_number_of_workers(baseline_batch):
    assert_same_batch(first_batch("baseline", num_workers=2), baseline_batch)


def test_another_seed_or_epoch_serves_other_batches(baseline_batch):
    other = first_batch("baseline", seed=6)
    assert [m["tiles"] for m in other["meta"]] != [m["tiles"] for m in baseline_batch["meta"]]


def test_ranks_share_one_order_and_one_augmentation_seed_per_position():
    dataset = list(range(10))
    single = SeededSampler(dataset, seed=1)
    single.set_epoch(2)
    keys = list(single)
    assert sorted(index for index, _ in keys) == dataset
    assert [seed for _, seed in keys] == [stream_seed(1, "augment", 2, p) for p in range(10)]
    ranks = []
    for rank in range(3):
        sampler = SeededSampler(dataset, seed=1, num_replicas=3, rank=rank)
        sampler.set_epoch(2)
        assert len(sampler) == 4
        ranks.append(list(sampler))
    interleaved = [ranks[p % 3][p // 3] for p in range(12)]
    assert interleaved[:10] == keys
    assert [index for index, _ in interleaved[10:]] == [index for index, _ in keys[:2]]


@pytest.mark.slow
def test_two_runs_with_one_seed_log_bit_identical_losses_and_end_with_identical_weights(tmp_path):
    overrides = [*SMALL_DATA, "data.num_workers=0", "trainer.max_epochs=2"]
    overrides += ["trainer.log_every_n_steps=1", "callbacks.progress_bar=null"]
    runs = [tmp_path / "first", tmp_path / "second"]
    for folder in runs:
        train(compose_config([*overrides, f"output_dir={folder}"]))
    losses = []
    for folder in runs:
        with open(folder / "csv" / "metrics.csv", newline="") as file:
            losses.append([row["train/loss"] for row in csv.DictReader(file)])
    assert len([loss for loss in losses[0] if loss]) == 8  # 2 epochs of 4 steps
    assert losses[0] == losses[1]
    first, second = (load_checkpoint(f / "checkpoints" / "last.ckpt")["state_dict"] for f in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)

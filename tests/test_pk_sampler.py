"""`data.sampler=pk`: P x K batches for the emb task (P identities, K images holding each), drawn
from the run's seed per epoch and group, shared out between DDP ranks by whole groups."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException
from test_train import TINY_RUN

from yolor_lightning.checkpoints import load_checkpoint
from yolor_lightning.config import ConfigValueError, check_values, compose_config
from yolor_lightning.data.sampling import IdentityBalancedSampler, SampleKey
from yolor_lightning.seeding import stream_seed
from yolor_lightning.train import build_datamodule, train

# identity -> the images holding it; identity 9 has 2 images only
IMAGES_OF = {
    1: [0, 1, 2, 3, 4],
    2: [0, 5, 6, 7, 8],
    3: [1, 5, 9, 10, 11, 12],
    4: [13, 14, 15, 16],
    5: [2, 6, 10, 14, 17, 18],
    9: [19, 3],
}
DATASET = list(range(20))
PK_DATA = [
    "data.sampler=pk",
    "data.pk.identities=3",
    "data.pk.instances=2",
    "data.batch_size=6",
    "data.shapes.num_train=24",
    "data.shapes.num_val=8",
    "data.shapes.image_size=96",
    "data.image_size=96",
]


def sampler(identities=2, instances=3, seed=0, epoch=0, **kwargs) -> IdentityBalancedSampler:
    s = IdentityBalancedSampler(DATASET, IMAGES_OF, identities, instances, seed, **kwargs)
    s.set_epoch(epoch)
    return s


def blocks(group: list[tuple[int, int]], instances: int) -> list[tuple[int, list[int]]]:
    """``(identity, images)`` per block of K slots."""
    return [
        (group[start][0], [index for _, index in group[start : start + instances]])
        for start in range(0, len(group), instances)
    ]


def test_every_group_holds_p_identities_with_k_images_that_hold_them():
    s = sampler(identities=3, instances=2)
    assert s.num_groups == 4 and len(s) == 24  # ceil(20 / 6) groups of 6
    for number in range(s.num_groups):
        group = s.group(number)
        assert len(group) == 6
        parts = blocks(group, 2)
        assert len({identity for identity, _ in parts}) == 3
        for identity, images in parts:
            assert len(images) == 2
            assert all(index in IMAGES_OF[identity] for index in images)


def test_a_group_takes_an_image_once_while_the_identity_has_others():
    for epoch in range(10):
        s = sampler(identities=3, instances=3, epoch=epoch)
        for number in range(s.num_groups):
            taken: set[int] = set()
            for identity, images in blocks(s.group(number), 3):
                fresh = [index for index in IMAGES_OF[identity] if index not in taken]
                assert len(set(images) - taken) == min(3, len(fresh)), (identity, images, taken)
                taken.update(images)


def test_an_identity_with_fewer_than_k_images_repeats_them_with_other_augmentations():
    s = sampler(identities=6, instances=4)  # every identity in every group
    group = s.group(0)
    (images,) = [images for identity, images in blocks(group, 4) if identity == 9]
    assert len(images) == 4 and set(images) <= {3, 19}
    keys = list(s)[:24]
    assert [key.index for key in keys] == [index for _, index in group]
    seeds = [key.seed for key in keys]
    assert seeds == [stream_seed(0, "augment", 0, position) for position in range(24)]
    assert len(set(seeds)) == 24  # a repeated image is another sample


def test_the_sampler_yields_its_groups_in_order_with_the_positions_augmentation_seeds():
    s = sampler(identities=2, instances=3, seed=4, epoch=3)
    keys = list(s)
    assert len(keys) == len(s) == 4 * 6  # ceil(20 / 6) = 4 groups
    expected = [index for number in range(4) for _, index in s.group(number)]
    assert [key.index for key in keys] == expected
    assert all(isinstance(key, SampleKey) for key in keys)
    assert [key.seed for key in keys] == [stream_seed(4, "augment", 3, p) for p in range(24)]


def test_one_seed_gives_the_same_groups_and_another_epoch_or_seed_others():
    first = list(sampler(seed=7, epoch=1))
    assert list(sampler(seed=7, epoch=1)) == first
    assert [k.index for k in sampler(seed=7, epoch=2)] != [k.index for k in first]
    assert [k.index for k in sampler(seed=8, epoch=1)] != [k.index for k in first]


def test_ddp_ranks_take_disjoint_whole_groups_of_the_single_process_order():
    single = sampler(identities=3, instances=2, epoch=5)  # 4 groups of 6
    keys = list(single)
    for world in (2, 3):
        ranks = [
            list(sampler(identities=3, instances=2, epoch=5, num_replicas=world, rank=r))
            for r in range(world)
        ]
        groups = -(-4 // world) * world  # rounded up to a multiple of the processes
        assert all(len(keys_of_rank) == groups // world * 6 for keys_of_rank in ranks)
        for rank, keys_of_rank in enumerate(ranks):
            for step, start in enumerate(range(0, len(keys_of_rank), 6)):
                number = rank + step * world  # rank r takes groups r, r + world, ...
                batch = keys_of_rank[start : start + 6]
                assert [key.index for key in batch] == [i for _, i in single.group(number)]
                if number < 4:
                    assert batch == keys[number * 6 : number * 6 + 6]
        seeds = [key.seed for keys_of_rank in ranks for key in keys_of_rank]
        assert len(set(seeds)) == len(seeds)  # no position on two ranks


def pk_datamodule(*overrides: str, num_workers: int = 0):
    datamodule = build_datamodule(
        compose_config(["+experiment=jde", *PK_DATA, f"data.num_workers={num_workers}", *overrides])
    )
    datamodule.setup("fit")
    return datamodule


def first_batches(datamodule, count: int = 2) -> list[dict]:
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    return list(loader)[:count]


def test_the_splits_identity_index_lists_the_images_with_a_non_crowd_object():
    split = pk_datamodule()._splits["train"]
    annotations = json.loads(split.ann_file.read_text())
    ids = sorted(image["id"] for image in annotations["images"])
    expected: dict[int, set[int]] = {}
    for ann in annotations["annotations"]:
        if not ann.get("iscrowd", 0):
            expected.setdefault(ann["track_id"], set()).add(ids.index(ann["image_id"]))
    index = split.identity_images()
    assert {identity: set(found) for identity, found in index.items()} == expected
    assert all(found == sorted(found) for found in index.values())


def test_a_loader_batch_is_one_group_whose_samples_hold_their_identity():
    datamodule = pk_datamodule("data.augment.mosaic=0")  # no mosaic crop: no object is lost
    split = datamodule._splits["train"]
    batches = first_batches(datamodule)
    s = datamodule.train_dataloader().sampler
    s.set_epoch(1)
    for number, batch in enumerate(batches):
        group = s.group(number)
        assert [m["image_id"] for m in batch["meta"]] == [split[i]["image_id"] for _, i in group]
        for (identity, _), target in zip(group, batch["targets"], strict=True):
            assert identity in target["identities"].tolist()


@pytest.mark.slow
def test_pk_batches_do_not_depend_on_the_number_of_workers():
    single, workers = (first_batches(pk_datamodule(num_workers=n)) for n in (0, 2))
    for a, b in zip(single, workers, strict=True):
        assert torch.equal(a["images"], b["images"])
        assert [m["tiles"] for m in a["meta"]] == [m["tiles"] for m in b["meta"]]
        for x, y in zip(a["targets"], b["targets"], strict=True):
            assert torch.equal(x["boxes"], y["boxes"])
            assert torch.equal(x["identities"], y["identities"])


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.sampler=pq", "data.sampler"), ("data.pk.instances=two", "data.pk.instances")],
)
def test_a_sampler_choice_or_type_the_schema_refuses_names_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["+experiment=jde", override])
    assert f"full_key: {key}" in str(error.value.__cause__)


@pytest.mark.parametrize("key", ["data.pk.identities", "data.pk.instances"])
def test_a_non_positive_p_or_k_names_the_key(key):
    with pytest.raises(ConfigValueError, match=f"{key}=0 is invalid: must be an integer > 0"):
        check_values(compose_config(["+experiment=jde", "data.sampler=pk", f"{key}=0"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.batch_size=8"],
            r"data.pk.identities=3 x data.pk.instances=2 = 6 is invalid with data.batch_size=8",
        ),
        (["task=jdc"], r"data.sampler=pk balances the identities of the emb task"),
    ],
)
def test_a_pk_batch_that_does_not_fit_the_batch_size_or_the_task_names_the_keys(overrides, message):
    cfg = compose_config(["+experiment=jde", *PK_DATA, *overrides])
    with pytest.raises(InstantiationException, match=message):
        build_datamodule(cfg)


def test_more_identities_per_batch_than_the_split_has_names_the_key():
    with pytest.raises(ValueError, match=r"data.pk.identities=7 is invalid: .* has 6 identities"):
        sampler(identities=7, instances=1)


def test_the_jde_triplet_pk_experiment_serves_4_x_4_batches_of_the_recipes_16():
    cfg = compose_config(["+experiment=jde_triplet_pk", "data.num_workers=0"])
    check_values(cfg)
    datamodule = build_datamodule(cfg)
    assert (datamodule.sampler, datamodule.pk.identities, datamodule.pk.instances) == ("pk", 4, 4)
    assert datamodule.batch_size == 16
    assert (cfg.task.emb.loss.name, cfg.task.emb.mining.name) == ("triplet", "semihard")


def test_the_datamodule_keeps_the_samplers_name_for_checkpoints():
    """Checkpoints hold plain data only: the schema's Enum member would be refused on loading."""
    for sampler in ("shuffle", "pk"):
        datamodule = pk_datamodule(f"data.sampler={sampler}")
        assert type(datamodule.hparams["sampler"]) is str and datamodule.sampler == sampler


@pytest.mark.slow
def test_a_jde_triplet_pk_run_trains_checkpoints_and_evaluates(tmp_path):
    tiny = [*TINY_RUN, "data.batch_size=4", "data.pk.identities=2", "data.pk.instances=2"]
    overrides = ["+experiment=jde_triplet_pk", *tiny, "trainer.max_epochs=1", "logger=csv"]
    overrides.append("trainer.check_val_every_n_epoch=1")  # a validation: checkpoints
    results = train(compose_config([*overrides, f"output_dir={tmp_path}"]))
    assert results["status"] == "finished" and results["steps"] == 6  # ceil(24 / 4) groups
    assert 0.0 <= results["metrics"]["emb/mAP"] <= 1.0
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # plain data only
    assert checkpoint["datamodule_hyper_parameters"]["sampler"] == "pk"

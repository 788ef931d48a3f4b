"""Careless config values stop the run before anything runs, naming the key and what it allows."""

from __future__ import annotations

import pytest
from cli_runs import TINY, offline_environment, run
from hydra.errors import ConfigCompositionException

from yolor_lightning.config import ConfigValueError, check_values, compose_config


@pytest.mark.parametrize(("value", "expected"), [("no", False), ("off", False), ("yes", True)])
def test_skip_bad_is_a_boolean(value, expected):
    assert compose_config([f"data.skip_bad={value}"]).data.skip_bad is expected


@pytest.mark.parametrize(
    "override",
    ["data.skip_bad=maybe", "data.batch_size=8.5", "data.num_workers=two", "data.shapes.seed=x"],
)
def test_a_value_of_the_wrong_type_names_the_key(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override])
    assert f"full_key: {key}" in str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("data.augment.mosaic=1.5", "in [0, 1] (a probability)"),
        ("data.augment.mixup=1.5", "in [0, 1] (a probability)"),
        ("data.augment.flip_lr=-0.1", "in [0, 1] (a probability)"),
        ("data.augment.hsv_h=0.7", "in [0, 0.5]"),
        ("data.augment.hsv_s=2", "in [0, 1]"),
        ("data.num_workers=-1", ">= 0"),
        ("seed=abc", "must be a number, an integer in [0, 2**32 - 1]"),
        ("seed=1.5", "an integer in [0, 2**32 - 1]"),
        ("seed=-1", "an integer in [0, 2**32 - 1]"),
        ("model.tasks=[det,cls]", "it must equal task.targets=['det']"),
        ("trainer.limit_val_batches=0", "a fraction in (0, 1] or a number of batches >= 1"),
        ("trainer.limit_train_batches=1.5", "a fraction in (0, 1] or a number of batches >= 1"),
        ("trainer.max_epochs=2.5", "an integer > 0"),
        ("trainer.check_val_every_n_epoch=0", "an integer > 0"),
        ("task.optimizer.lr=inf", "must be a finite number"),
        ("task.loss.box_gain=nan", "must be a finite number"),
        ("trainer.gradient_clip_val=inf", "must be a finite number"),
        ("task.loss.level_weights=[4,1,-inf]", "must be a finite number"),
    ],
)
def test_an_out_of_range_value_names_the_key_and_the_allowed_values(override, allowed):
    key = override.partition("=")[0]
    with pytest.raises(ConfigValueError) as error:
        check_values(compose_config([override]))
    message = str(error.value)
    assert message.startswith(f"config key {key}") and allowed in message


def test_evaluating_the_best_checkpoint_needs_a_validation_during_the_fit():
    overrides = ["trainer.max_epochs=4", "trainer.check_val_every_n_epoch=5"]
    with pytest.raises(ConfigValueError, match=r"must be <= trainer.max_epochs=4"):
        check_values(compose_config([*overrides, "callbacks.checkpoint.evaluate=best"]))
    check_values(compose_config([*overrides, "callbacks.checkpoint.evaluate=last"]))


@pytest.mark.parametrize("override", ["data.skip_bad=no", "trainer.limit_val_batches=0.5"])
def test_good_values_pass(override):
    check_values(compose_config([override]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "config key seed='abc' is invalid"),
        ("trainer.limit_val_batches=0", "config key trainer.limit_val_batches=0 is invalid"),
        ("task.optimizer.lr=inf", "config key task.optimizer.lr=inf is invalid"),
        ("data.batch_size=8.5", "full_key: data.batch_size"),
    ],
)
def test_the_cli_stops_before_training(override, message, tmp_path):
    environment = offline_environment(tmp_path / "cache")
    result = run(
        "yolor_lightning",
        *TINY,
        override,
        "hydra.run.dir=run",
        cwd=tmp_path,
        env=environment,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "cache").exists()  # stopped before the dataset was even generated
    assert not (tmp_path / "run" / "checkpoints").exists()

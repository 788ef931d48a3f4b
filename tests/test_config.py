"""The real Hydra configs compose, and bad values stop with the key and the allowed values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from yolor_lightning.config import ConfigValueError, check_values, compose_config
from yolor_lightning.models import MODEL_SIZES
from yolor_lightning.models.gelan import GELAN_SIZES
from yolor_lightning.models.pgi import PGI_SIZES
from yolor_lightning.models.revcol import REVCOL_SIZES
from yolor_lightning.models.sites import SITE_OPERATORS


def composition_message(error: BaseException) -> str:
    """The error and its causes, as Hydra prints them for a failed override."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__
    return "\n".join(parts)


def test_defaults_compose_to_tiny_yolov4_csp_on_shapes():
    cfg = compose_config()
    assert cfg.data.name == "shapes"
    assert cfg.model.name == "yolov4_csp"
    assert cfg.model.size == "tiny"
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.task.name == "det"
    check_values(cfg)


def test_experiment_is_appended_not_a_default():
    assert compose_config().experiment_name == "default"
    assert compose_config(["+experiment=baseline"]).experiment_name == "baseline"
    with pytest.raises(ConfigCompositionException, match="experiment"):
        compose_config(["experiment=baseline"])


@pytest.mark.parametrize(
    ("model", "size", "sizes"),
    [
        ("yolov4_csp", "huge", MODEL_SIZES),
        ("gelan", "tiny", GELAN_SIZES),
        ("yolov9", "e", PGI_SIZES),
        ("revcol", "c", REVCOL_SIZES),
    ],
)
def test_a_size_the_model_does_not_have_names_the_key_the_model_and_its_sizes(
    model: str, size: str, sizes: tuple[str, ...]
):
    cfg = compose_config([f"model={model}", f"model.size={size}"])
    with pytest.raises(ConfigValueError) as error:
        check_values(cfg)
    message = str(error.value)
    assert f"model.size={size!r}" in message and f"model={model}" in message
    assert f"one of {', '.join(sizes)} " in message


def test_a_size_is_checked_against_the_model_a_multirun_job_picks():
    """``-m +experiment=revcol,yolor_revcol model.size=t``: Hydra composes the command line
    without its sweep first (the default yolov4_csp, which has no size t), then each job."""
    compose_config(["model.size=t"])
    check_values(compose_config(["+experiment=revcol", "model.size=t"]))


def test_misspelled_group_choice_lists_the_available_options():
    with pytest.raises(MissingConfigException) as error:
        compose_config(["data=cocoo"])
    assert "cocoo" in str(error.value)
    assert "coco" in str(error.value) and "shapes" in str(error.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("task.optimizer.lr=-0.01", "task.optimizer.lr"),
        ("task.optimizer.momentum=1.5", "task.optimizer.momentum"),
        ("data.image_size=250", "data.image_size"),
        ("task.evaluation.iou_threshold=0", "task.evaluation.iou_threshold"),
        ("callbacks.ema.decay=1.0", "callbacks.ema.decay"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
    ],
)
def test_out_of_range_value_names_the_key(override: str, key: str):
    cfg = compose_config([override])
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        check_values(cfg)


def test_wrong_type_is_rejected_with_the_key():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["task.optimizer.lr=fast"])
    message = composition_message(error.value)
    assert "task.optimizer.lr" in message and "fast" in message


def test_level_weights_must_be_three_non_negative_numbers():
    cfg = compose_config(["task.loss.level_weights=[1.0,2.0]"])
    with pytest.raises(ConfigValueError, match="level_weights"):
        check_values(cfg)


def test_implicit_sites_are_off_by_default():
    implicit = compose_config().model.implicit
    assert set(implicit) == set(SITE_OPERATORS)
    assert all(site.operator is None for site in implicit.values())


def test_operator_and_prior_override_from_the_command_line():
    cfg = compose_config(["model.implicit.fa.operator=mul", "model.implicit.fa.prior=mf"])
    check_values(cfg)
    assert (cfg.model.implicit.fa.operator.name, cfg.model.implicit.fa.prior.name) == ("mul", "mf")


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["model.implicit.pr.operator=concat"], "model.implicit.pr.operator", "add, mul"),
        (["model.implicit.fa_star.operator=add"], "model.implicit.fa_star.operator", "mul"),
        (["model.implicit.pr_star.operator=add"], "model.implicit.pr_star.operator", "mul"),
        (
            ["model.implicit.fa.operator=add", "model.implicit.fa.latent_dim=8"],
            "model.implicit.fa.latent_dim",
            "prior nn",
        ),
        (
            ["model.implicit.fa.operator=add", "model.implicit.fa.coefficients=sparse"],
            "model.implicit.fa.coefficients",
            "prior mf",
        ),
        (
            [
                "model.implicit.fa.operator=add",
                "model.implicit.fa.prior=nn",
                "model.implicit.fa.latent_dim=0",
            ],
            "model.implicit.fa.latent_dim",
            "> 0",
        ),
    ],
)
def test_invalid_implicit_combination_names_the_key_and_what_is_allowed(overrides, key, allowed):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigValueError) as error:
        check_values(cfg)
    assert key in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("model.implicit.fa.prior=pca", ["vector", "nn", "mf"]),
        ("model.implicit.fa.operator=sub", ["add", "mul", "concat"]),
        ("model.implicit.fa.coefficients=dense", ["free", "nonneg", "sparse"]),
    ],
)
def test_unknown_implicit_name_names_the_key_and_the_allowed_names(override, allowed):
    key = override.split("=")[0]
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override])
    message = composition_message(error.value)
    assert key in message
    assert all(name in message for name in allowed)

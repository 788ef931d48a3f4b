"""The network from named parts: registries, build_network, the part contracts, model configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolor_lightning.analysis.complexity import count_parameters
from yolor_lightning.config import compose_config, plain
from yolor_lightning.implicit import fold
from yolor_lightning.models import (
    BACKBONES,
    DETECTION_HEADS,
    NECKS,
    UnifiedNetwork,
    build_heads,
    build_network,
    build_yolov4_csp,
    output_tensors,
)
from yolor_lightning.models.registry import Registry

YOLOR_SITES = {"fa": {"operator": "add"}, "pr": {"operator": "mul"}}


def model_config(model: str = "yolov4_csp", *overrides: str) -> dict:
    return plain(compose_config([f"model={model}", *overrides]).model)


def test_builtin_parts_are_registered_by_name() -> None:
    assert {"cspdarknet53", "gelan"} <= set(BACKBONES.names)
    assert {"csp_pan", "gelan_pan"} <= set(NECKS.names)
    assert {"anchor", "dfl"} <= set(DETECTION_HEADS.names)


def test_unknown_part_names_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet'.*cspdarknet53.*gelan"):
        build_network({**model_config(), "backbone": "resnet"})


def test_a_name_is_registered_once() -> None:
    registry = Registry("backbone")
    registry.register("mine")(nn.Identity)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine")(nn.Identity)


def test_yolov4_csp_config_builds_the_yolov4_csp_network_exactly() -> None:
    built = build_network(model_config("yolov4_csp", "model.implicit.fa.operator=add"))
    reference = build_yolov4_csp("tiny", 8, {"fa": {"operator": "add"}})
    assert built.state_dict().keys() == reference.state_dict().keys()
    assert count_parameters(built) == count_parameters(reference)


def test_a_config_without_part_names_is_yolov4_csp() -> None:
    """Checkpoints written before parts had names rebuild as they were trained."""
    config = model_config()
    del config["backbone"], config["neck"], config["head"]
    assert (
        build_network(config).state_dict().keys() == build_yolov4_csp("tiny", 8).state_dict().keys()
    )


def test_a_backbone_without_its_contract_is_refused() -> None:
    with pytest.raises(TypeError, match="does not declare out_channels, strides"):
        UnifiedNetwork(nn.Identity(), nn.Identity(), build_heads([8, 8, 8], [8, 16, 32], 2))


@pytest.mark.parametrize("head", ["anchor", "dfl"])
@pytest.mark.parametrize("model", ["yolov4_csp", "gelan", "revcol"])
def test_every_backbone_takes_every_head_and_folds(model: str, head: str) -> None:
    torch.manual_seed(0)
    network = build_network(
        {**model_config(model, "task=jdc"), "head": head, "implicit": YOLOR_SITES}
    ).eval()
    for implicit in (m for m in network.modules() if hasattr(m, "prior")):
        with torch.no_grad():
            for parameter in implicit.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.3)
    plain_network = build_network({**model_config(model, "task=jdc"), "head": head})
    folded = fold(network)
    assert folded.state_dict().keys() == plain_network.state_dict().keys()
    assert count_parameters(folded) == count_parameters(plain_network)
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(
            output_tensors(network(images)), output_tensors(folded(images)), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gelan_config_picks_its_parts_and_sizes() -> None:
    config = model_config("gelan", "model.size=s")
    assert (config["backbone"], config["neck"], config["head"], config["size"]) == (
        "gelan",
        "gelan_pan",
        "dfl",
        "s",
    )

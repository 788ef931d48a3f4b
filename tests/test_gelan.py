"""GELAN (YOLOv9's network) against the official counts, its channel rounding, and the fused
(inference) form that RepConvN re-parameterisation and batch-norm folding give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.models import build_network
from yolor_lightning.models.fusion import fuse
from yolor_lightning.models.gelan import DualGELANBackbone, GELANBackbone, GELANNeck
from yolor_lightning.models.gelan_blocks import RepConvN

# size -> (params, GFLOPs at 640) in training form and fused, with YOLOv9's DDetect head at 80
# classes (WongKinYiu/yolov9 gelan-{s,m,c}.yaml).
OFFICIAL = {
    "s": ((7_226_208, 26.7), (7_105_888, 26.4)),
    "m": ((20_124_000, 76.8), (19_978_672, 76.3)),
    "c": ((25_498_752, 102.8), (25_288_768, 102.1)),
}


def gelan(size: str, head: str = "dfl", num_classes: int = 80) -> nn.Module:
    return build_network(
        {
            "backbone": "gelan",
            "neck": "gelan_pan",
            "head": head,
            "size": size,
            "num_classes": num_classes,
        }
    )


@pytest.mark.parametrize("size", sorted(OFFICIAL))
def test_gelan_matches_the_official_counts_trained_and_fused(size: str) -> None:
    (params, gflops), (params_fused, gflops_fused) = OFFICIAL[size]
    with torch.device("meta"):
        network = gelan(size)
    fused = fuse(network)
    assert count_parameters(network) == params
    assert count_parameters(fused) == params_fused
    assert count_gflops(network, 640) == pytest.approx(gflops, abs=0.05)
    assert count_gflops(fused, 640) == pytest.approx(gflops_fused, abs=0.05)


def test_gelan_m_rounds_the_180_channel_downsample_to_184() -> None:
    with torch.device("meta"):
        neck = GELANNeck(GELANBackbone("m").out_channels, "m")
    assert neck.downsample[0].cv1[0].out_channels == 184
    assert neck.bottom_up[0].cv1[0].in_channels == 184 + 360


def test_backbone_declares_its_strides_and_channels() -> None:
    backbone = GELANBackbone("t")
    features = backbone(torch.rand(1, 3, 64, 96))
    assert backbone.strides == (8, 16, 32)
    assert [f.shape[1:] for f in features] == [
        (c, 64 // s, 96 // s) for c, s in zip(backbone.out_channels, backbone.strides, strict=True)
    ]


def randomize_batch_norms(network: nn.Module) -> None:
    """Running statistics and affine parameters away from their initial values, so that fusing
    them is tested."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)


def test_gelan_and_its_head_use_yolov9s_batch_norm_eps() -> None:
    network = gelan("t", num_classes=3)
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    assert all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)


def test_repconvn_reparameterises_into_one_3x3_conv() -> None:
    block = RepConvN(6, 10).eval()
    randomize_batch_norms(block)
    fused = block.fused()
    assert [type(m) for m in fused] == [nn.Conv2d, nn.SiLU] and fused[0].kernel_size == (3, 3)
    images = torch.rand(2, 6, 9, 7)
    torch.testing.assert_close(fused(images), block(images), rtol=1e-5, atol=1e-5)


def test_fused_gelan_gives_the_same_outputs() -> None:
    network = gelan("t", num_classes=3).eval()
    randomize_batch_norms(network)
    fused = fuse(network)
    assert not any(isinstance(m, nn.BatchNorm2d | RepConvN) for m in fused.modules())
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected, actual = network(images)["det"], fused(images)["det"]
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gelan_e_routes_two_columns_and_matches_the_official_deployed_size() -> None:
    """GELAN-E's exact counts are this code's; YOLOv9's README gives its deployed (fused) form
    as 57.3M parameters and 189.0 GFLOPs."""
    with torch.device("meta"):
        network = gelan("e")
    fused = fuse(network)
    assert isinstance(network.backbone, DualGELANBackbone)
    assert count_parameters(network) == 58_114_432
    assert count_parameters(fused) == 57_345_920
    assert count_gflops(fused, 640) == pytest.approx(189.0, abs=0.1)


def test_gelan_e_backbone_runs_at_a_small_size() -> None:
    backbone = DualGELANBackbone("e")
    features = backbone(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(512, 8, 8), (1024, 4, 4), (1024, 2, 2)]

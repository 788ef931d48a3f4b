"""YOLOv4-CSP and YOLOR-CSP, full size and -X (size `x`), in the layout of the official weights:
the Darknet-cfg network of WongKinYiu/yolor (`models.models.Darknet` built from
`cfg/yolov4_csp.cfg`, `cfg/yolor_csp.cfg`, `cfg/yolov4_csp_x.cfg` or `cfg/yolor_csp_x.cfg`), whose
state dict is keyed by the cfg's layer index:
`module_list.<i>.Conv2d.weight`, `module_list.<i>.BatchNorm2d.{weight,bias,running_mean,
running_var,num_batches_tracked}`, `module_list.<i>.Conv2d.bias` (prediction convs) and
`module_list.<i>.implicit` (ImplicitA / ImplicitM, shape `[1, C, 1, 1]`).

`cfg_layers` walks this project's network in the cfg's layer order, not in the order its modules
are defined (most convolutions sit elsewhere: a CSP stage's shortcut conv comes first in the cfg,
the neck's lateral convs after the upsampling, the implicit layers before the head), with one
entry per `module_list` entry, weightless ones (route, shortcut, maxpool, upsample,
shift_channels, control_channels, yolo) included, so the index is the cfg's. Besides the order,
`from_official` accounts for what differs (batch norm does not: eps 1e-4 in both):

- the cfg concatenates the SPP branches as [max-pool 13, 9, 5, input], SPPCSP as
  [input, 5, 9, 13]: the conv that reads them gets its input columns in reversed blocks;
- implicit vectors: `[1, C, 1, 1]` there, the vector prior's `[1, C]` here;
- anchors, strides and classes: the cfg's `[yolo]` layers (`CFG_ANCHORS`, `CFG_STRIDES`,
  `CFG_CLASSES`), the same as this project's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolor_lightning.implicit import Implicit, ImplicitConv2d, VectorPrior
from yolor_lightning.models.backbone import CSPDarknet53
from yolor_lightning.models.blocks import Conv, CSPPlainStage, CSPResidualStage
from yolor_lightning.models.head import DetectionHead
from yolor_lightning.models.neck import CSPPAN
from yolor_lightning.models.network import UnifiedNetwork

OFFICIAL_BN_EPS = 1e-4
"""Batch-norm eps of the official Darknet-cfg code (`models.models.create_modules`)."""

CFG_ANCHORS = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)
"""The `[yolo]` layers' anchors (w, h in pixels) by their masks 0,1,2 / 3,4,5 / 6,7,8."""
CFG_STRIDES = (8, 16, 32)
"""The strides of the three `[yolo]` layers (P3, P4, P5)."""
CFG_CLASSES = 80

BATCH_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class OfficialLayoutError(ValueError):
    """Official weights that do not fit the official layout: a key missing, unexpected or of
    another shape."""


@dataclass(frozen=True)
class CfgLayer:
    """One entry of the official `module_list`: the module of this project's network that holds
    its weights (`None`: a layer without weights), and, for a conv that reads a concatenation the
    cfg orders the other way round, the number of equal input blocks to reverse."""

    module: str | None = None
    reversed_input_blocks: int = 1


NO_WEIGHTS = CfgLayer()


def _residual_stage(prefix: str, stage: CSPResidualStage) -> list[CfgLayer]:
    """A backbone CSP stage after its stride-2 conv: shortcut, route -2, main_in, per block
    reduce, expand and [shortcut], main_out, route (main_out, shortcut), fuse."""
    blocks = [
        layer
        for i in range(len(stage.blocks))
        for layer in (
            CfgLayer(f"{prefix}.blocks.{i}.reduce"),
            CfgLayer(f"{prefix}.blocks.{i}.expand"),
            NO_WEIGHTS,
        )
    ]
    return [
        CfgLayer(f"{prefix}.shortcut"),
        NO_WEIGHTS,
        CfgLayer(f"{prefix}.main_in"),
        *blocks,
        CfgLayer(f"{prefix}.main_out"),
        NO_WEIGHTS,
        CfgLayer(f"{prefix}.fuse"),
    ]


def _plain_stage(prefix: str, stage: CSPPlainStage) -> list[CfgLayer]:
    """A neck CSP stage: reduce, shortcut, route -2, per block reduce and expand, route
    (blocks, shortcut), fuse."""
    blocks = [
        CfgLayer(f"{prefix}.blocks.{i}.{conv}")
        for i in range(len(stage.blocks))
        for conv in ("reduce", "expand")
    ]
    return [
        CfgLayer(f"{prefix}.reduce"),
        CfgLayer(f"{prefix}.shortcut"),
        NO_WEIGHTS,
        *blocks,
        NO_WEIGHTS,
        CfgLayer(f"{prefix}.fuse"),
    ]


def _backbone(backbone: CSPDarknet53) -> list[CfgLayer]:
    stem = [CfgLayer(f"backbone.stem.{name}") for name in ("0", "1", "2.reduce", "2.expand")]
    layers = [*stem, NO_WEIGHTS]
    for s, stage in enumerate(backbone.stages):
        layers += [
            CfgLayer(f"backbone.stages.{s}.0"),
            *_residual_stage(f"backbone.stages.{s}.1", stage[1]),
        ]
    return layers


def _neck(neck: CSPPAN) -> list[CfgLayer]:
    pools = len(neck.spp.pools)
    layers = [
        CfgLayer("neck.spp.shortcut"),
        NO_WEIGHTS,
        *(CfgLayer(f"neck.spp.main_in.{i}") for i in range(len(neck.spp.main_in))),
        *(NO_WEIGHTS for _ in range(2 * pools)),  # maxpool, route per pool; the last route concats
        CfgLayer("neck.spp.main_out.0", reversed_input_blocks=pools + 1),
        *(CfgLayer(f"neck.spp.main_out.{i}") for i in range(1, len(neck.spp.main_out))),
        NO_WEIGHTS,
        CfgLayer("neck.spp.fuse"),
    ]
    for i in reversed(range(len(neck.top_down))):
        # reduce, upsample, route to the backbone, lateral, route (lateral, upsampled)
        layers += [CfgLayer(f"neck.reduce.{i}"), NO_WEIGHTS, NO_WEIGHTS]
        layers += [CfgLayer(f"neck.lateral.{i}"), NO_WEIGHTS]
        layers += _plain_stage(f"neck.top_down.{i}", neck.top_down[i])
    for i in range(len(neck.bottom_up)):
        # downsample, route (downsampled, top-down level)
        layers += [CfgLayer(f"neck.downsample.{i}"), NO_WEIGHTS]
        layers += _plain_stage(f"neck.bottom_up.{i}", neck.bottom_up[i])
    return layers


def _head(head: DetectionHead) -> list[CfgLayer]:
    """YOLOv4-CSP: per level route, the neck's output conv, prediction conv, yolo. YOLOR-CSP
    first lists its ImplicitA layers (one per level), then its ImplicitM layers, and adds a
    shift_channels (+ ImplicitA) before and a control_channels (× ImplicitM) after each
    prediction conv."""
    levels = range(len(head.predictors))
    yolor = any(isinstance(predictor, ImplicitConv2d) for predictor in head.predictors)
    for level, predictor in enumerate(head.predictors):
        if yolor and not _is_yolor_predictor(predictor):
            raise OfficialLayoutError(
                f"heads.det.predictors.{level} is not the official YOLOR-CSP head's: it has "
                "ImplicitA (add, vector prior) before and ImplicitM (mul, vector prior) after "
                "each prediction conv (+experiment=yolor_csp)"
            )
    prefix = "heads.det.predictors"
    sides = ("before", "after") if yolor else ()
    implicit = [CfgLayer(f"{prefix}.{level}.{side}.0") for side in sides for level in levels]
    channel_op = [NO_WEIGHTS] if yolor else []  # shift_channels / control_channels
    return [
        *implicit,
        *(
            layer
            for level in levels
            for layer in (
                NO_WEIGHTS,
                CfgLayer(f"neck.output.{level}"),
                *channel_op,
                CfgLayer(f"{prefix}.{level}.conv" if yolor else f"{prefix}.{level}"),
                *channel_op,
                NO_WEIGHTS,
            )
        ),
    ]


def _is_yolor_predictor(predictor: nn.Module) -> bool:
    if not isinstance(predictor, ImplicitConv2d):
        return False
    sites = [(i.operator, type(i.prior), i.groups) for i in (*predictor.before, *predictor.after)]
    return len(predictor.before) == 1 and sites == [
        ("add", VectorPrior, 1),
        ("mul", VectorPrior, 1),
    ]


def cfg_layers(network: UnifiedNetwork) -> list[CfgLayer]:
    """The official `module_list` of `network`, entry by entry (see the module docstring).

    `network` must be YOLOv4-CSP (`cspdarknet53`, `csp_pan`) with the anchor det head only;
    YOLOR-CSP's implicit sites are fa add + pr mul, vector prior (`+experiment=yolor_csp`).
    """
    yolov4_csp = network.tasks == ("det",) and all(
        isinstance(part, kind)
        for part, kind in (
            (network.backbone, CSPDarknet53),
            (network.neck, CSPPAN),
            (network.heads["det"], DetectionHead),
        )
    )
    if not yolov4_csp:
        raise OfficialLayoutError(
            "the official Darknet-cfg layout is YOLOv4-CSP's (backbone cspdarknet53, neck "
            "csp_pan, the anchor det head, no other task)"
        )
    return [*_backbone(network.backbone), *_neck(network.neck), *_head(network.heads["det"])]


@dataclass(frozen=True)
class OfficialTensor:
    """Where an official tensor goes: this project's state-dict key, and how many input blocks
    to reverse (a conv after the SPP concat)."""

    key: str
    reversed_input_blocks: int = 1


def official_keys(network: UnifiedNetwork) -> dict[str, OfficialTensor]:
    """Each key of the official state dict of `network`, in the cfg's order, with where its
    tensor goes in `network.state_dict()`."""
    keys: dict[str, OfficialTensor] = {}
    for index, layer in enumerate(cfg_layers(network)):
        if layer.module is None:
            continue
        module = network.get_submodule(layer.module)
        official = f"module_list.{index}"
        if isinstance(module, Conv):
            norm = module[1]
            if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.eps != OFFICIAL_BN_EPS:
                raise OfficialLayoutError(
                    f"{layer.module}: {type(norm).__name__} with eps {norm.eps}; the official "
                    f"weights have batch norm with eps {OFFICIAL_BN_EPS}"
                )
            keys[f"{official}.Conv2d.weight"] = OfficialTensor(
                f"{layer.module}.0.weight", layer.reversed_input_blocks
            )
            for name in BATCH_NORM_TENSORS:
                keys[f"{official}.BatchNorm2d.{name}"] = OfficialTensor(f"{layer.module}.1.{name}")
        elif isinstance(module, nn.Conv2d):
            keys[f"{official}.Conv2d.weight"] = OfficialTensor(f"{layer.module}.weight")
            keys[f"{official}.Conv2d.bias"] = OfficialTensor(f"{layer.module}.bias")
        elif isinstance(module, Implicit):
            keys[f"{official}.implicit"] = OfficialTensor(f"{layer.module}.prior.z")
        else:
            raise OfficialLayoutError(f"{layer.module}: no official layout for a {type(module)}")
    return keys


def reverse_input_blocks(weight: Tensor, blocks: int) -> Tensor:
    """A conv weight whose input columns, `blocks` equal blocks, are taken in reverse block
    order: the conv that reads `cat(reversed(parts))` instead of `cat(parts)`. Its own inverse."""
    return torch.cat(weight.chunk(blocks, dim=1)[::-1], dim=1) if blocks > 1 else weight


def from_official(official: Mapping[str, Tensor], network: UnifiedNetwork) -> dict[str, Tensor]:
    """`network.state_dict()` filled from the official state dict (cast to the network's dtype),
    with the cfg's anchors; raises `OfficialLayoutError` naming the first missing, unexpected or
    misshapen keys."""
    head = network.heads["det"]
    if head.strides != CFG_STRIDES or head.num_classes != CFG_CLASSES:
        raise OfficialLayoutError(
            f"the det head has strides {head.strides} and {head.num_classes} classes; the "
            f"official cfg's are {CFG_STRIDES} and {CFG_CLASSES}"
        )
    keys = official_keys(network)
    missing = [key for key in keys if key not in official]
    if missing:
        raise OfficialLayoutError(
            f"missing key(s) {', '.join(missing[:5])} ({len(missing)} in all)"
        )
    unexpected = [key for key in official if key not in keys]
    if unexpected:
        raise OfficialLayoutError(
            f"unexpected key(s) {', '.join(unexpected[:5])} ({len(unexpected)} in all)"
        )
    state = network.state_dict()
    for key, target in keys.items():
        shape = _official_shape(key, state[target.key])
        if tuple(official[key].shape) != shape:
            raise OfficialLayoutError(
                f"{key} has shape {tuple(official[key].shape)}, the layout gives {shape} "
                f"(it becomes {target.key})"
            )
    converted = {}
    for key, target in keys.items():
        expected = state[target.key]
        value = official[key].reshape(expected.shape).to(expected.dtype)
        converted[target.key] = reverse_input_blocks(value, target.reversed_input_blocks)
    converted["heads.det.anchors"] = torch.tensor(CFG_ANCHORS, dtype=head.anchors.dtype)
    left = [key for key in state if key not in converted]
    if left:
        raise OfficialLayoutError(f"no official tensor for {', '.join(left[:5])}")
    return converted


def _official_shape(key: str, tensor: Tensor) -> tuple[int, ...]:
    """The shape the official state dict gives to the tensor that becomes `tensor`."""
    return (*tensor.shape, 1, 1) if key.endswith(".implicit") else tuple(tensor.shape)

"""Official weights in (`python -m yolor_lightning.convert`): the official cfg files' layer lists
written out here as data give the official state dict's keys and shapes; random official weights
are converted and the project's network must compute what the cfg computes with them (a small
interpreter of the cfg below), every tensor must land unchanged, and bad files must say what is
wrong and what is accepted."""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_runs import STEPS_PER_EPOCH, TINY
from torch import Tensor, nn

from yolor_lightning.analysis.complexity import count_parameters
from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.cli import ToolConfigError
from yolor_lightning.config import compose_config
from yolor_lightning.convert import (
    ConversionError,
    convert,
    main,
    read_official,
    weights_checkpoint,
)
from yolor_lightning.evaluate import evaluate
from yolor_lightning.models import build_yolov4_csp
from yolor_lightning.models.official_layout import reverse_input_blocks
from yolor_lightning.predict.models import load_predictor
from yolor_lightning.train import build_module, train

# The layer lists of WongKinYiu/yolor cfg/yolov4_csp.cfg, cfg/yolor_csp.cfg and their -X models
# cfg/yolov4_csp_x.cfg, cfg/yolor_csp_x.cfg, one entry per [section] after [net] (the index of
# `module_list`). Every [convolutional] with batch_normalize=1 has activation=silu; the
# prediction convs have no batch norm, a bias and activation=linear.


def conv(filters: int, size: int = 1, stride: int = 1) -> tuple:
    return ("conv", filters, size, stride)


def route(*layers: int) -> tuple:
    return ("route", layers)


SHORTCUT = ("shortcut", -3)
UPSAMPLE = ("upsample", 2)
PREDICT = ("predict", 255)


def maxpool(size: int) -> tuple:
    return ("maxpool", size)


def residual(filters: int, repeats: int) -> list[tuple]:
    return [conv(filters), conv(filters, 3), SHORTCUT] * repeats


def csp2(filters: int, repeats: int) -> list[tuple]:
    """The neck's CSP stage: `repeats` plain bottlenecks, route -1,-(2 repeats + 2)."""
    return [
        conv(filters),
        conv(filters),
        route(-2),
        *[conv(filters), conv(filters, 3)] * repeats,
        route(-1, -(2 * repeats + 2)),
        conv(filters),
    ]


SPP_POOLS = [maxpool(5), route(-2), maxpool(9), route(-4), maxpool(13), route(-1, -3, -5, -6)]


def yolov4_head(levels: list[tuple[int, int]]) -> list[tuple]:
    """Per level (the neck layer it routes to, its 3x3 conv's filters): route, 3x3 conv,
    prediction conv, yolo."""
    return [
        layer
        for i, (source, filters) in enumerate(levels)
        for layer in (route(source), conv(filters, 3), PREDICT, ("yolo", i))
    ]


def yolor_head(levels: list[tuple[int, int]], first: int) -> list[tuple]:
    """An implicit_add per level (from layer `first` on), an implicit_mul per level, then per
    level route, 3x3 conv, shift_channels, prediction conv, control_channels, yolo."""
    adds = [("implicit_add", filters) for _, filters in levels]
    muls = [("implicit_mul", 255)] * len(levels)
    return [
        *adds,
        *muls,
        *(
            layer
            for i, (source, filters) in enumerate(levels)
            for layer in (
                route(source),
                conv(filters, 3),
                ("shift_channels", first + i),
                PREDICT,
                ("control_channels", first + len(levels) + i),
                ("yolo", i),
            )
        ),
    ]


BACKBONE = [
    *[conv(32, 3), conv(64, 3, 2), conv(32), conv(64, 3), SHORTCUT],  # 0-4
    *[conv(128, 3, 2), conv(64), route(-2), conv(64), *residual(64, 2), conv(64)],
    *[route(-1, -10), conv(128)],  # 5-17
    *[conv(256, 3, 2), conv(128), route(-2), conv(128), *residual(128, 8), conv(128)],
    *[route(-1, -28), conv(256)],  # 18-48: P3
    *[conv(512, 3, 2), conv(256), route(-2), conv(256), *residual(256, 8), conv(256)],
    *[route(-1, -28), conv(512)],  # 49-79: P4
    *[conv(1024, 3, 2), conv(512), route(-2), conv(512), *residual(512, 4), conv(512)],
    *[route(-1, -16), conv(1024)],  # 80-98: P5
]
NECK = [
    *[conv(512), route(-2), conv(512), conv(512, 3), conv(512), *SPP_POOLS],  # 99-109: SPP
    *[conv(512), conv(512, 3), route(-1, -13), conv(512)],  # 110-113
    *[conv(256), UPSAMPLE, route(79), conv(256), route(-1, -3), *csp2(256, 2)],  # 114-127
    *[conv(128), UPSAMPLE, route(48), conv(128), route(-1, -3), *csp2(128, 2)],  # 128-141
    *[conv(256, 3, 2), route(-1, 127), *csp2(256, 2)],  # 142-152
    *[conv(512, 3, 2), route(-1, 113), *csp2(512, 2)],  # 153-163
]
HEAD_LEVELS = [(141, 256), (152, 512), (163, 1024)]
YOLOV4_CSP = [*BACKBONE, *NECK, *yolov4_head(HEAD_LEVELS)]  # 164-175
YOLOR_CSP = [*BACKBONE, *NECK, *yolor_head(HEAD_LEVELS, first=164)]  # 164-187
# -X: 1.25 times the filters but the first conv's 32; 3, 10, 10, 5 residual blocks; 3 plain
# blocks per neck stage; two conv pairs after the SPP concat
BACKBONE_X = [
    *[conv(32, 3), conv(80, 3, 2), conv(40), conv(80, 3), SHORTCUT],  # 0-4
    *[conv(160, 3, 2), conv(80), route(-2), conv(80), *residual(80, 3), conv(80)],
    *[route(-1, -13), conv(160)],  # 5-20
    *[conv(320, 3, 2), conv(160), route(-2), conv(160), *residual(160, 10), conv(160)],
    *[route(-1, -34), conv(320)],  # 21-57: P3
    *[conv(640, 3, 2), conv(320), route(-2), conv(320), *residual(320, 10), conv(320)],
    *[route(-1, -34), conv(640)],  # 58-94: P4
    *[conv(1280, 3, 2), conv(640), route(-2), conv(640), *residual(640, 5), conv(640)],
    *[route(-1, -19), conv(1280)],  # 95-116: P5
]
NECK_X = [
    *[conv(640), route(-2), conv(640), conv(640, 3), conv(640), *SPP_POOLS],  # 117-127: SPP
    *[conv(640), conv(640, 3), conv(640), conv(640, 3), route(-1, -15), conv(640)],  # 128-133
    *[conv(320), UPSAMPLE, route(94), conv(320), route(-1, -3), *csp2(320, 3)],  # 134-149
    *[conv(160), UPSAMPLE, route(57), conv(160), route(-1, -3), *csp2(160, 3)],  # 150-165
    *[conv(320, 3, 2), route(-1, 149), *csp2(320, 3)],  # 166-178
    *[conv(640, 3, 2), route(-1, 133), *csp2(640, 3)],  # 179-191
]
HEAD_LEVELS_X = [(165, 320), (178, 640), (191, 1280)]
YOLOV4_CSP_X = [*BACKBONE_X, *NECK_X, *yolov4_head(HEAD_LEVELS_X)]  # 192-203
YOLOR_CSP_X = [*BACKBONE_X, *NECK_X, *yolor_head(HEAD_LEVELS_X, first=192)]  # 192-215
CFG = {
    "yolor_csp": YOLOR_CSP,
    "yolov4_csp": YOLOV4_CSP,
    "yolor_csp_x": YOLOR_CSP_X,
    "yolov4_csp_x": YOLOV4_CSP_X,
}
# [yolo] anchors = 12,16, 19,36, 40,28, 36,75, 76,55, 72,146, 142,110, 192,243, 459,401;
# masks 0,1,2 / 3,4,5 / 6,7,8 for the yolo layers at strides 8, 16, 32 (models.models).
ANCHORS = torch.tensor(
    [12, 16, 19, 36, 40, 28, 36, 75, 76, 55, 72, 146, 142, 110, 192, 243, 459, 401]
)
YOLO_STRIDES = (8, 16, 32)
IMAGE = 64


def routed(layers: tuple[int, ...], index: int) -> list[int]:
    """A route's or shortcut's layers as absolute indices (negative: counted back from here)."""
    return [layer if layer >= 0 else index + layer for layer in layers]


def official_shapes(cfg: list[tuple]) -> dict[str, tuple[int, ...]]:
    """The official state dict's keys and shapes, as `models.models.Darknet` names them."""
    shapes, channels = {}, []
    for i, (kind, *options) in enumerate(cfg):
        key = f"module_list.{i}"
        width = channels[-1] if channels else 3
        if kind == "conv":
            filters, size, _ = options
            shapes[f"{key}.Conv2d.weight"] = (filters, width, size, size)
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{key}.BatchNorm2d.{name}"] = (filters,)
            shapes[f"{key}.BatchNorm2d.num_batches_tracked"] = ()
            width = filters
        elif kind == "predict":
            shapes[f"{key}.Conv2d.weight"] = (options[0], width, 1, 1)
            shapes[f"{key}.Conv2d.bias"] = (options[0],)
            width = options[0]
        elif kind.startswith("implicit"):
            shapes[f"{key}.implicit"] = (1, options[0], 1, 1)
            width = options[0]
        elif kind == "route":
            width = sum(channels[j] for j in routed(options[0], i))
        channels.append(width)
    return shapes


def random_official_state(cfg: list[tuple], seed: int = 0) -> dict[str, Tensor]:
    """Official weights with distinct random values, scaled so that activations stay O(1) over
    the whole network; batch counters numbered by layer."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> Tensor:
        return torch.randn(shape, generator=generator) * std + mean

    state = {}
    for key, shape in official_shapes(cfg).items():
        index = int(key.split(".")[1])
        if key.endswith("Conv2d.weight"):
            state[key] = normal(shape, std=(shape[1] * shape[2] * shape[3]) ** -0.5)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + index)
        elif key.endswith("BatchNorm2d.weight"):
            state[key] = normal(shape, mean=1.0, std=0.2)
        elif key.endswith(".implicit") and cfg[index][0] == "implicit_mul":
            state[key] = normal(shape, mean=1.0, std=0.3)
        else:  # biases, running means, ImplicitA
            state[key] = normal(shape, std=0.3)
    return state


def reference_outputs(cfg: list[tuple], state: dict[str, Tensor], images: Tensor) -> list[Tensor]:
    """What the official Darknet-cfg network computes in eval mode: the raw output of each yolo
    layer, [B, anchors, H, W, 85] (batch-norm eps 1e-4 as `models.models.create_modules`)."""
    outputs: list[Tensor] = []
    raw: list[Tensor] = []
    x = images
    for i, (kind, *options) in enumerate(cfg):
        key = f"module_list.{i}"
        if kind == "conv":
            _, size, stride = options
            x = F.conv2d(x, state[f"{key}.Conv2d.weight"], stride=stride, padding=size // 2)
            norm = [state[f"{key}.BatchNorm2d.{n}"] for n in ("running_mean", "running_var")]
            affine = [state[f"{key}.BatchNorm2d.{n}"] for n in ("weight", "bias")]
            x = F.silu(F.batch_norm(x, *norm, *affine, training=False, eps=1e-4))
        elif kind == "predict":
            x = F.conv2d(x, state[f"{key}.Conv2d.weight"], state[f"{key}.Conv2d.bias"])
        elif kind == "shortcut":
            x = x + outputs[i + options[0]]
        elif kind == "route":
            x = torch.cat([outputs[j] for j in routed(options[0], i)], dim=1)
        elif kind == "maxpool":
            x = F.max_pool2d(x, options[0], stride=1, padding=options[0] // 2)
        elif kind == "upsample":
            x = F.interpolate(x, scale_factor=options[0], mode="nearest")
        elif kind.startswith("implicit"):
            x = state[f"{key}.implicit"]
        elif kind == "shift_channels":
            x = x + outputs[options[0]]
        elif kind == "control_channels":
            x = x * outputs[options[0]]
        elif kind == "yolo":
            batch, _, height, width = x.shape
            raw.append(x.view(batch, 3, 85, height, width).permute(0, 1, 3, 4, 2))
        outputs.append(x)
    return raw


def reference_boxes(raw: list[Tensor]) -> Tensor:
    """The official YOLOLayer's inference decoding of the raw outputs, [B, N, 85]."""
    decoded = []
    for level, p in enumerate(raw):
        stride = YOLO_STRIDES[level]
        anchors = ANCHORS.view(9, 2)[3 * level : 3 * level + 3].float()
        rows, cols = torch.meshgrid(
            torch.arange(p.shape[2]), torch.arange(p.shape[3]), indexing="ij"
        )
        grid = torch.stack((cols, rows), dim=-1).float()
        io = p.sigmoid()
        xy = (io[..., :2] * 2 - 0.5 + grid) * stride
        wh = (io[..., 2:4] * 2) ** 2 * anchors.view(1, 3, 1, 1, 2)
        decoded.append(torch.cat((xy, wh, io[..., 4:]), dim=-1).reshape(p.shape[0], -1, 85))
    return torch.cat(decoded, dim=1)


class Converted:
    """An official random state dict, written as the released files are, and its conversion."""

    def __init__(self, name: str, folder: Path):
        self.name = name
        self.cfg = CFG[name]
        self.official = random_official_state(self.cfg)
        self.source = folder / f"{name}.pt"
        torch.save({"epoch": -1, "model": self.official, "optimizer": None}, self.source)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main([str(self.source)])  # a bare first argument: src=
        self.printed = printed.getvalue()
        self.path = self.source.with_suffix(".ckpt")
        self.checkpoint = load_checkpoint(self.path)
        self.network = module_from_checkpoint(self.checkpoint).network.eval()


@pytest.fixture(scope="module", params=list(CFG))
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return Converted(request.param, tmp_path_factory.mktemp(request.param))


def test_the_cfg_lists_have_the_official_layer_counts():
    layers = {name: len(cfg) for name, cfg in CFG.items()}
    assert layers == {"yolor_csp": 188, "yolov4_csp": 176, "yolor_csp_x": 216, "yolov4_csp_x": 204}
    for name, cfg in CFG.items():
        convs = sum(kind in ("conv", "predict") for kind, *_ in cfg)
        assert convs == (137 if name.endswith("_x") else 115), name


def official_parameters(cfg: list[tuple]) -> int:
    """The official network's parameter count: conv weights, batch-norm scales and shifts,
    prediction biases and implicit vectors (running statistics are buffers)."""
    return sum(
        math.prod(shape)
        for key, shape in official_shapes(cfg).items()
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )


YOLOR_CSP_SITES = {"fa": {"operator": "add"}, "pr": {"operator": "mul"}}


@pytest.mark.parametrize(
    ("name", "size", "parameters"),
    [
        ("yolov4_csp", "full", 52_921_437),
        ("yolor_csp", "full", 52_923_994),
        ("yolov4_csp_x", "x", 99_751_053),
        ("yolor_csp_x", "x", 99_754_058),
    ],
)
def test_model_size_has_the_parameters_of_the_official_cfg(name: str, size: str, parameters: int):
    """The cfg's layer list, counted layer by layer, and the network of the size it converts
    into (80 classes, built on the meta device) have the same number of parameters."""
    assert official_parameters(CFG[name]) == parameters
    implicit = YOLOR_CSP_SITES if name.startswith("yolor") else None
    with torch.device("meta"):
        network = build_yolov4_csp(size, 80, implicit)
    assert count_parameters(network) == parameters


@torch.no_grad()
def test_converted_network_computes_the_official_outputs(converted: Converted):
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    expected = reference_outputs(converted.cfg, converted.official, images)
    raw = converted.network(images)["det"]
    assert [r.shape for r in raw] == [e.shape for e in expected]
    for level, (got, want) in enumerate(zip(raw, expected, strict=True)):
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=f"P{level + 3}")
    boxes = converted.network.heads["det"].decode(raw)
    torch.testing.assert_close(boxes, reference_boxes(expected), rtol=1e-4, atol=1e-3)


def test_every_official_tensor_lands_once_and_unchanged(converted: Converted):
    """Each official tensor equals exactly one tensor of the converted network (the conv after
    the SPP concat with its input blocks reversed), and every tensor of the network is one of
    them, except the anchors (the cfg's)."""
    state = converted.network.state_dict()
    official = dict(converted.official)
    spp_conv = f"module_list.{converted.cfg.index(SPP_POOLS[-1]) + 1}.Conv2d.weight"
    official[spp_conv] = reverse_input_blocks(official[spp_conv], 4)
    by_values = defaultdict(list)  # the random values tell the tensors apart
    for key, value in state.items():
        by_values[_fingerprint(value)].append(key)
    found = {
        key: [
            k
            for k in by_values[_fingerprint(value)]
            if torch.equal(state[k].flatten(), value.flatten())
        ]
        for key, value in official.items()
    }
    assert {key: keys for key, keys in found.items() if len(keys) != 1} == {}
    landed = sorted(k for keys in found.values() for k in keys)
    assert landed == sorted(k for k in state if k != "heads.det.anchors")
    assert state["heads.det.anchors"].flatten().tolist() == ANCHORS.float().tolist()


def _fingerprint(tensor: Tensor) -> tuple:
    return (tensor.numel(), *tensor.flatten()[:3].tolist())


HAND_MAPPED = {
    "csp": {
        0: "backbone.stem.0",
        3: "backbone.stem.2.expand",
        6: "backbone.stages.0.1.shortcut",
        8: "backbone.stages.0.1.main_in",
        15: "backbone.stages.0.1.main_out",
        17: "backbone.stages.0.1.fuse",
        99: "neck.spp.shortcut",
        113: "neck.spp.fuse",
        114: "neck.reduce.1",
        117: "neck.lateral.1",
        120: "neck.top_down.1.shortcut",
        142: "neck.downsample.0",
        163: "neck.bottom_up.1.fuse",
    },
    "csp_x": {
        0: "backbone.stem.0",
        3: "backbone.stem.2.expand",
        6: "backbone.stages.0.1.shortcut",
        8: "backbone.stages.0.1.main_in",
        18: "backbone.stages.0.1.main_out",
        20: "backbone.stages.0.1.fuse",
        112: "backbone.stages.3.1.blocks.4.expand",
        117: "neck.spp.shortcut",
        130: "neck.spp.main_out.2",
        131: "neck.spp.main_out.3",
        133: "neck.spp.fuse",
        134: "neck.reduce.1",
        137: "neck.lateral.1",
        140: "neck.top_down.1.shortcut",
        147: "neck.top_down.1.blocks.2.expand",
        166: "neck.downsample.0",
        191: "neck.bottom_up.1.fuse",
    },
}
"""Official layer -> module here, read off the cfg by hand (the same in the YOLOv4 and the YOLOR
cfg of a size)."""
HEAD_CONVS = {
    "yolor_csp": (171, 173, 177),
    "yolov4_csp": (165, 166, 169),
    "yolor_csp_x": (199, 201, 205),
    "yolov4_csp_x": (193, 194, 197),
}
"""The first level's 3x3 conv and prediction conv, the second level's 3x3 conv."""
IMPLICIT_LAYERS = {"yolor_csp": (164, 169), "yolor_csp_x": (192, 197)}
"""The first ImplicitA (P3) and the last ImplicitM (P5)."""


def test_hand_mapped_layers_hold_their_official_tensors(converted: Converted):
    state = converted.network.state_dict()
    layout = "csp_x" if converted.name.endswith("_x") else "csp"
    for index, module in HAND_MAPPED[layout].items():
        official = f"module_list.{index}"
        assert torch.equal(
            state[f"{module}.0.weight"], converted.official[f"{official}.Conv2d.weight"]
        )
        assert state[f"{module}.1.num_batches_tracked"].item() == 1000 + index
    yolor = converted.name.startswith("yolor")
    head_convs = HEAD_CONVS[converted.name]
    output, predictor, next_output = (f"module_list.{i}.Conv2d.weight" for i in head_convs)
    conv = "heads.det.predictors.0.conv" if yolor else "heads.det.predictors.0"
    assert torch.equal(state["neck.output.0.0.weight"], converted.official[output])
    assert torch.equal(state[f"{conv}.weight"], converted.official[predictor])
    assert torch.equal(state["neck.output.1.0.weight"], converted.official[next_output])
    if yolor:
        first_add, last_mul = IMPLICIT_LAYERS[converted.name]
        implicit_a = converted.official[f"module_list.{first_add}.implicit"].view(1, -1)
        implicit_m = converted.official[f"module_list.{last_mul}.implicit"].view(1, -1)
        assert torch.equal(state["heads.det.predictors.0.before.0.prior.z"], implicit_a)
        assert torch.equal(state["heads.det.predictors.2.after.0.prior.z"], implicit_m)


def test_conv_after_the_spp_concat_reads_the_official_channel_order():
    """The cfg concatenates [max-pool 13, 9, 5, input] (route -1,-3,-5,-6); SPPCSP concatenates
    [input, 5, 9, 13]: the converted conv gives the official conv's output on its own order."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 13, 13, generator=generator)
    pools = {k: F.max_pool2d(x, k, stride=1, padding=k // 2) for k in (5, 9, 13)}
    official_weight = torch.randn(6, 32, 1, 1, generator=generator)
    official = F.conv2d(torch.cat([pools[13], pools[9], pools[5], x], dim=1), official_weight)
    project_weight = reverse_input_blocks(official_weight, 4)
    project = F.conv2d(torch.cat([x, pools[5], pools[9], pools[13]], dim=1), project_weight)
    torch.testing.assert_close(project, official)
    assert not torch.allclose(project_weight, official_weight)


def test_converted_checkpoint_is_the_model_of_the_cfgs_size_on_coco(converted: Converted):
    checkpoint = converted.checkpoint
    model = checkpoint["hyper_parameters"]["model"]
    size = "x" if converted.name.endswith("_x") else "full"
    assert (model["size"], model["num_classes"], model["tasks"]) == (size, 80, ["det"])
    sites = {site: options["operator"] for site, options in model["implicit"].items()}
    yolor = converted.name.startswith("yolor")
    expected = {"fa": "add", "pr": "mul"} if yolor else {}
    assert {site: op for site, op in sites.items() if op} == expected
    data = checkpoint["datamodule_hyper_parameters"]
    assert (data["name"], data["num_classes"], data["image_size"]) == ("coco", 80, 640)
    assert checkpoint["converted_from"]["model"] == converted.name
    assert checkpoint["converted_from"]["cfg"] == f"cfg/{converted.name}.cfg"
    assert (checkpoint["optimizer_states"], checkpoint["lr_schedulers"]) == ([], [])
    assert f"checkpoint: {converted.path}" in converted.printed


def test_evaluate_composes_the_network_the_checkpoint_holds(converted: Converted):
    """The overrides the tool prints build the module whose state dict the checkpoint holds:
    evaluate loads it strictly into exactly that module."""
    overrides = converted.checkpoint["converted_from"]["overrides"]
    assert " ".join(overrides) in converted.printed
    module = build_module(compose_config([*overrides, "data.root=/coco"]))
    shapes = {key: value.shape for key, value in module.state_dict().items()}
    assert shapes == {key: v.shape for key, v in converted.checkpoint["state_dict"].items()}


@torch.no_grad()
def test_predict_reads_the_converted_checkpoint_and_finds_the_official_boxes(
    converted: Converted,
):
    images = torch.rand(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))
    predictor = load_predictor(converted.path, image_size=IMAGE)
    boxes = predictor.run(images)["predictions"]
    expected = reference_boxes(reference_outputs(converted.cfg, converted.official, images))
    torch.testing.assert_close(boxes, expected, rtol=1e-3, atol=1e-2)
    assert predictor.image_size == IMAGE and len(predictor.categories) == 80


def _official_file(tmp_path: Path, state: dict[str, Tensor]) -> Path:
    path = tmp_path / "official.pt"
    torch.save({"model": state}, path)
    return path


STEM_CONV = "module_list.1.Conv2d.weight"
"""The stem's stride-2 conv: its filters (64; -X: 80) tell the -X models from the others."""


def placeholders(name: str) -> dict[str, Tensor]:
    """Every key of the official state dict of `name` with a one-value tensor, but the stem's
    stride-2 conv of its shape: enough for the key checks, which come before the shape checks."""
    shapes = official_shapes(CFG[name])
    state = {key: torch.zeros(1) for key in shapes}
    state[STEM_CONV] = torch.zeros(shapes[STEM_CONV])
    return state


@pytest.mark.parametrize(
    ("name", "removed", "added"),
    [
        ("yolov4_csp", "module_list.110.Conv2d.weight", None),
        ("yolov4_csp", None, "module_list.176.Conv2d.weight"),
        ("yolov4_csp_x", "module_list.131.Conv2d.weight", None),
        ("yolor_csp_x", None, "module_list.216.Conv2d.weight"),
    ],
)
def test_missing_or_unexpected_key_names_the_key_and_the_file(
    tmp_path: Path, name: str, removed: str | None, added: str | None
):
    state = placeholders(name)
    state.pop(removed, None)
    if added:
        state[added] = torch.zeros(1)
    source = _official_file(tmp_path, state)
    problem = f"missing key(s) {removed}" if removed else f"unexpected key(s) {added}"
    expected = f"{source}: not the official {name} layout (cfg/{name}.cfg): {problem} (1 in all)"
    with pytest.raises(ConversionError, match=re.escape(expected)):
        convert(source)


def test_wrong_shape_names_the_key_both_shapes_and_what_is_accepted(tmp_path: Path):
    """A file whose stem conv has 96 filters, neither CSP's 64 nor CSP-X's 80."""
    state = placeholders("yolov4_csp")
    for key, shape in official_shapes(YOLOV4_CSP).items():
        if key.startswith("module_list.0."):
            state[key] = torch.zeros(shape)
    state[STEM_CONV] = torch.zeros(96, 32, 3, 3)
    source = _official_file(tmp_path, state)
    with pytest.raises(ConversionError) as error:
        convert(source)
    message = str(error.value)
    assert f"{source}: not the official yolov4_csp layout (cfg/yolov4_csp.cfg)" in message
    assert (
        "module_list.1.Conv2d.weight has shape (96, 32, 3, 3), the layout gives (64, 32, 3, 3)"
        in message
    )
    assert "cfg/yolor_csp_x.cfg or cfg/yolov4_csp_x.cfg" in message


class WholeModel(nn.Module):
    """Stands for a pickled models.models.Darknet."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)


def test_pickled_whole_model_is_refused_with_how_to_extract_its_state_dict(tmp_path: Path):
    source = tmp_path / "whole.pt"
    torch.save({"model": WholeModel()}, source)
    with pytest.raises(ConversionError) as error:
        read_official(source)
    message = str(error.value)
    assert f"{source}: refused to load" in message and "WholeModel" in message
    assert "torch.save({'model': m.float().state_dict()}" in message
    assert "accepted: the state dict of the official Darknet-cfg network" in message


def test_pickled_calls_stay_refused_beside_the_numpy_types(tmp_path: Path):
    class Exploit:
        def __reduce__(self):
            return (print, ("ran",))

    source = tmp_path / "exploit.pt"
    torch.save({"best_fitness": np.array([0.5]), "model": Exploit()}, source)
    with pytest.raises(ConversionError, match=r"refused to load.*builtins\.print"):
        read_official(source)


def test_file_without_a_state_dict_says_what_it_found(tmp_path: Path):
    source = tmp_path / "other.pt"
    torch.save({"epoch": 3, "weights": [1, 2]}, source)
    expected = f"{source}: holds no state dict (found ['epoch', 'weights'])"
    with pytest.raises(ConversionError, match=re.escape(expected)):
        read_official(source)


def test_cli_names_a_missing_file_and_a_missing_src(tmp_path: Path):
    absent = tmp_path / "absent.pt"
    with pytest.raises(ToolConfigError, match=re.escape(f"{absent}: no such checkpoint file")):
        main([str(absent)])
    with pytest.raises(ToolConfigError, match=re.escape("src=... required")):
        main([])


@pytest.mark.parametrize("core", ["core", "_core"])
def test_numpy_metadata_of_the_released_files_is_read(tmp_path: Path, core: str):
    """The official train.py saves best_fitness (NumPy arrays and numbers) beside the state
    dict; files of 2021 name NumPy 1's module numpy.core.multiarray, NumPy 2 numpy._core."""
    state = {"module_list.0.Conv2d.weight": torch.ones(2)}
    metadata = {"best_fitness": np.array([0.49]), "best_fitness_ap": np.float64(0.49)}
    source = tmp_path / "released.pt"
    torch.save(
        {"epoch": -1, **metadata, "model": state}, source, _use_new_zipfile_serialization=False
    )
    data = source.read_bytes()
    pickled = next(
        name for name in (b"numpy._core.multiarray", b"numpy.core.multiarray") if name in data
    )
    source.write_bytes(data.replace(pickled, f"numpy.{core}.multiarray".encode()))
    assert read_official(source).keys() == state.keys()


@pytest.mark.slow
def test_training_and_evaluation_start_from_a_weights_checkpoint(tmp_path: Path):
    """What the converter writes (weights, config, no optimizer / schedule / loop state) is
    read by evaluate and by training, which starts at epoch 0: shown on the tiny model."""
    overrides = [*TINY, "logger=csv", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1"]
    cfg = compose_config(overrides)
    module = build_module(cfg)
    stem = "network.backbone.stem.0.0.weight"  # marked: a constant no initialisation draws
    module.state_dict()[stem].fill_(0.05)
    path = tmp_path / "weights.ckpt"
    torch.save(weights_checkpoint(cfg, module), path)
    overrides.append(f"ckpt_path={path}")

    evaluation = evaluate(compose_config([*overrides, f"output_dir={tmp_path / 'eval'}"]))
    assert {"AP", "AP50"} <= set(evaluation["metrics"])
    results = train(compose_config([*overrides, f"output_dir={tmp_path / 'run'}"]))
    assert (results["status"], results["epochs"]) == ("finished", 1)
    assert results["steps"] == STEPS_PER_EPOCH[1]  # from epoch 0, not resumed
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    for weights in ("state_dict", "current_model_state"):  # EMA and live: moved a little
        moved = (trained[weights][stem] - 0.05).abs()
        # a fresh initialisation spreads these weights over +-0.19 (fan-in 27); one epoch moves
        # them by hundredths, a few elements by a little more
        assert moved.mean() < 0.01 and moved.max() < 0.1, (moved.mean(), moved.max())

"""``python -m yolor_lightning.convert src=PATH [out=PATH] [data_root=DIR]``: official weights in.

Reads a checkpoint of the official YOLOR-CSP, YOLOv4-CSP or their -X models (WongKinYiu/yolor:
the state dict of ``models.models.Darknet`` built from ``cfg/yolor_csp.cfg``,
``cfg/yolov4_csp.cfg``, ``cfg/yolor_csp_x.cfg`` or ``cfg/yolov4_csp_x.cfg``, as
``{'model': state_dict, ...}`` or bare) and writes this project's checkpoint of the same network
(:mod:`yolor_lightning.models.official_layout` maps the tensors): the model of the cfg's size
(``full``, or ``x`` for -X) with the cfg's anchors and 80 classes, composed as
``+experiment=yolor_csp`` (or ``baseline``) ``model.size=full`` (or ``x``)
``data=coco recipe=coco``. ``evaluate`` (with those overrides), ``export``,
``predict`` and training from it (``ckpt_path=``, a fine-tuning run that starts at epoch 0) take
it as they take a checkpoint of this project's training.

The file is read with ``weights_only=True`` (:func:`~yolor_lightning.checkpoints.load_checkpoint`)
and, beside the tensors, the NumPy numbers of the official training's metadata
(``best_fitness``); a file that pickles a whole model is refused, with how to extract its state
dict.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig
from torch import Tensor

from yolor_lightning.callbacks.checkpoint_io import atomic_torch_save
from yolor_lightning.checkpoints import UnsafeCheckpointError, load_checkpoint
from yolor_lightning.cli import ToolConfigError, tool_config
from yolor_lightning.config import check_values, compose_config
from yolor_lightning.models import MODEL_SIZES
from yolor_lightning.models.official_layout import OfficialLayoutError, from_official
from yolor_lightning.tasks.unified import UnifiedModule
from yolor_lightning.train import build_datamodule, build_module


@dataclass(frozen=True)
class OfficialModel:
    """An official model: its cfg in WongKinYiu/yolor, the experiment and the model size of the
    same network here."""

    cfg: str
    experiment: str
    size: str


OFFICIAL_MODELS: dict[str, OfficialModel] = {
    "yolor_csp": OfficialModel("cfg/yolor_csp.cfg", "+experiment=yolor_csp", "full"),
    "yolov4_csp": OfficialModel("cfg/yolov4_csp.cfg", "+experiment=baseline", "full"),
    "yolor_csp_x": OfficialModel("cfg/yolor_csp_x.cfg", "+experiment=yolor_csp", "x"),
    "yolov4_csp_x": OfficialModel("cfg/yolov4_csp_x.cfg", "+experiment=baseline", "x"),
}
COCO_OVERRIDES = ("data=coco", "recipe=coco")
"""The rest of the config of a converted checkpoint: the model on COCO."""

ACCEPTED = (
    "accepted: the state dict of the official Darknet-cfg network (WongKinYiu/yolor, "
    "models.models.Darknet of cfg/yolor_csp.cfg, cfg/yolov4_csp.cfg, cfg/yolor_csp_x.cfg or "
    "cfg/yolov4_csp_x.cfg), as a .pt file holding {'model': state_dict} (the released "
    "yolor_csp.pt, yolor_csp_star.pt, yolor_csp_x.pt, yolor_csp_x_star.pt and the official "
    "train.py's checkpoints) or the state dict itself"
)
EXTRACT = (
    "A file that pickles a whole model is not read (unpickling it could run code): extract its "
    "state dict with the official code first, in a clone of WongKinYiu/yolor: "
    "python -c \"import torch; c = torch.load('yolor_csp.pt', map_location='cpu', "
    "weights_only=False); m = c['model'] if isinstance(c, dict) else c; "
    "torch.save({'model': m.float().state_dict()}, 'yolor_csp_state_dict.pt')\""
)


class ConversionError(ValueError):
    """An official checkpoint that cannot be converted: the file, the key, what is accepted."""


def numpy_globals() -> list[Any]:
    """The NumPy types of the official training checkpoints' metadata (``best_fitness``: arrays
    and scalars of numbers), under the names NumPy 1 and NumPy 2 pickle them with. Objects inside
    an array are still read by the weights-only unpickler, so nothing in them runs."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    numbers = (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)
    allowed: list[Any] = [np.ndarray, np.dtype, *(type(np.dtype(t)) for t in numbers)]
    for name in ("_reconstruct", "scalar"):
        function = getattr(multiarray, name)
        allowed += [(function, f"numpy.{core}.multiarray.{name}") for core in ("core", "_core")]
    return allowed


def read_official(path: str | Path) -> dict[str, Tensor]:
    """The official state dict in the file ``path``; :class:`ConversionError` naming the file
    and what is accepted when it holds something else."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(numpy_globals()):
            saved = load_checkpoint(path)
    except UnsafeCheckpointError as error:
        raise ConversionError(f"{error}\n{EXTRACT}\n{ACCEPTED}") from None
    state = saved.get("model", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ConversionError(f"{path}: holds no state dict (found {found})\n{ACCEPTED}")
    return dict(state)


def official_model(state: Mapping[str, Tensor]) -> str:
    """``yolor_csp`` when the state dict has implicit layers, else ``yolov4_csp``; its -X model
    (``_x``) when the stem's stride-2 conv (``module_list.1``) has CSP-X's 80 filters (64 in
    the others)."""
    name = "yolor_csp" if any(key.endswith(".implicit") for key in state) else "yolov4_csp"
    stem = state.get("module_list.1.Conv2d.weight")
    x = stem is not None and stem.ndim > 0 and stem.shape[0] == MODEL_SIZES["x"].stem[1]
    return f"{name}_x" if x else name


def weights_checkpoint(cfg: DictConfig, module: UnifiedModule) -> dict[str, Any]:
    """``module``'s weights as a checkpoint of this project's training composed as ``cfg``: its
    hyper-parameters and data settings, the weights as ``state_dict`` (where training keeps the
    EMA weights), and no optimizer, schedule or loop state (empty): evaluate, export and predict
    read it as a trained checkpoint, and training from it (``ckpt_path=``) starts at epoch 0
    with the configured optimizer and schedule."""
    return {
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams_initial),
        "datamodule_hyper_parameters": dict(build_datamodule(cfg).hparams_initial),
        "optimizer_states": [],
        "lr_schedulers": [],
    }


def converted_checkpoint(
    official: Mapping[str, Tensor], source: str | Path, data_root: str | None = None
) -> dict[str, Any]:
    """The checkpoint of this project that holds the official state dict ``official`` (read
    from ``source``), its config the same network at the cfg's size on COCO with
    ``data.root=data_root``; ``converted_from`` records the source, the cfg and the overrides
    that compose the same config (for ``evaluate``)."""
    name = official_model(official)
    model = OFFICIAL_MODELS[name]
    overrides = [model.experiment, f"model.size={model.size}", *COCO_OVERRIDES]
    cfg = compose_config(overrides)
    cfg.data.root = data_root
    check_values(cfg)
    module = build_module(cfg)
    try:
        state = from_official(official, module.network)
    except OfficialLayoutError as error:
        raise ConversionError(
            f"{source}: not the official {name} layout ({model.cfg}): {error}\n{ACCEPTED}"
        ) from None
    module.network.load_state_dict(state)
    converted_from = {"file": str(source), "model": name, "cfg": model.cfg, "overrides": overrides}
    return {**weights_checkpoint(cfg, module), "converted_from": converted_from}


def convert(
    src: str | Path, out: str | Path | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """Convert the official checkpoint ``src`` into ``out`` (default: ``src`` with the suffix
    ``.ckpt``); return the checkpoint's path (``checkpoint``) and its ``converted_from``."""
    src = Path(src)
    out = Path(out) if out else src.with_suffix(".ckpt")
    if out.resolve() == src.resolve():
        raise ConversionError(f"out={out} would overwrite src: give another out=")
    checkpoint = converted_checkpoint(read_official(src), src, data_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(checkpoint, out)
    return {"checkpoint": out, **checkpoint["converted_from"]}


@dataclass
class ConvertSchema:
    """Types of conf/convert.yaml."""

    src: str = MISSING
    out: str | None = None
    data_root: str | None = None


ConfigStore.instance().store(name="convert_schema", node=ConvertSchema)


def with_src_key(argv: Sequence[str]) -> list[str]:
    """The arguments with a bare first one (``convert yolor_csp.pt``) as ``src=``."""
    arguments = list(argv)
    if arguments and "=" not in arguments[0] and not arguments[0].startswith("-"):
        arguments[0] = f"src={arguments[0]}"
    return arguments


def main(argv: list[str] | None = None) -> None:
    prog = "yolor_lightning.convert"
    cfg = tool_config(prog, "convert", with_src_key(sys.argv[1:] if argv is None else argv))
    try:
        written = convert(cfg.src, cfg.out, cfg.data_root)
    except (ConversionError, FileNotFoundError) as error:
        raise ToolConfigError(f"{prog}: {error}") from None
    print(f"converted {written['model']} ({written['cfg']}) from {written['file']}")
    print(f"checkpoint: {written['checkpoint']}")
    print(
        f"evaluate:   python -m yolor_lightning.evaluate ckpt_path={written['checkpoint']} "
        f"{' '.join(written['overrides'])} data.root={cfg.data_root or '/path/to/coco'}"
    )


if __name__ == "__main__":
    main()

"""What ``ckpt=`` names, loaded for inference: a training checkpoint (``.ckpt``), an exported
folded network (``model_folded.pt``) or its ONNX file (``.onnx``, run by onnxruntime).

Every kind becomes a :class:`Predictor`: a function from float ``[B, 3, S, S]`` images in
[0, 1] to the deployed outputs by name (``predictions``, ``class_probabilities``,
``embeddings_p3`` ... as :class:`~yolor_lightning.export.DeployedNetwork` names them), with what
is needed to read them: the input size, the categories and the NMS settings. PyTorch runs the
same inference form as the ONNX file: EMA weights, implicit knowledge folded, batch norms fused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.export import FOLDED_CHECKPOINT, DeployedNetwork, deployed_form, load_folded
from yolor_lightning.models.fusion import fuse
from yolor_lightning.predict.categories import Categories, categories_of, numbered

CHECKPOINT_EXTENSIONS = (".ckpt", ".pt", ".onnx")
NMS_KEYS = ("conf_threshold", "iou_threshold", "max_detections", "max_candidates")


@dataclass
class Predictor:
    """A loaded model: ``run`` maps images to named outputs; ``nms`` holds the keyword arguments
    of :func:`~yolor_lightning.tasks.postprocess.non_max_suppression` its evaluation used (a
    training checkpoint's ``task.evaluation``; the function's defaults for an exported model)."""

    run: Callable[[Tensor], dict[str, Tensor]]
    image_size: int
    categories: Categories
    nms: dict[str, Any] = field(default_factory=dict)


def load_predictor(path: str | Path, image_size: int | None = None) -> Predictor:
    """The :class:`Predictor` of ``path`` by its extension; ``image_size`` replaces the size the
    model was trained or exported at (not for ONNX, whose input size is fixed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={path}: no such checkpoint file")
    if path.suffix == ".onnx":
        return _onnx_predictor(path, image_size)
    if path.suffix not in CHECKPOINT_EXTENSIONS:
        raise ValueError(
            f"ckpt={path}: unknown extension {path.suffix!r}; a training checkpoint (.ckpt), "
            f"an exported model_folded.pt or model_folded.onnx"
        )
    saved = load_checkpoint(path)
    if "hyper_parameters" in saved:  # a training checkpoint
        module = module_from_checkpoint(saved)
        network = deployed_form(module.network)
        size = image_size or saved.get("datamodule_hyper_parameters", {}).get("image_size")
        evaluation = module.hparams.evaluation
        nms = {key: value for key, value in evaluation.items() if key in NMS_KEYS}
        categories = categories_of(saved)
    else:
        network = load_folded(path)
        size = image_size or saved.get("image_size")
        nms = {}
        categories = saved.get("categories") or numbered(int(saved["num_classes"]))
    if not size:
        raise ValueError(f"ckpt={path} does not record its image size: pass image_size=N")
    return Predictor(_torch_runner(network), int(size), categories, nms)


def _torch_runner(network: torch.nn.Module) -> Callable[[Tensor], dict[str, Tensor]]:
    deployed = DeployedNetwork(fuse(network)).eval()
    names = deployed.output_names

    @torch.no_grad()
    def run(images: Tensor) -> dict[str, Tensor]:
        return dict(zip(names, deployed(images), strict=True))

    return run


def _onnx_predictor(path: Path, image_size: int | None) -> Predictor:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(f"ckpt={path}: ONNX needs pip install onnxruntime") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = int(session.get_inputs()[0].shape[-1])
    if image_size not in (None, size):
        raise ValueError(f"ckpt={path} takes {size}x{size} images: image_size={image_size} differs")
    names = [output.name for output in session.get_outputs()]

    def run(images: Tensor) -> dict[str, Tensor]:
        outputs = session.run(None, {"images": images.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(names, outputs, strict=True)}

    return Predictor(run, size, _onnx_categories(path, session))


def _onnx_categories(path: Path, session: Any) -> Categories:
    """Those of the folded checkpoint that export writes beside the ONNX file, else numbered."""
    beside = path.with_name(FOLDED_CHECKPOINT)
    if beside.is_file():
        saved = load_checkpoint(beside)
        if saved.get("categories"):
            return saved["categories"]
    shapes = {output.name: output.shape for output in session.get_outputs()}
    if "predictions" in shapes:
        return numbered(int(shapes["predictions"][-1]) - 5)
    return numbered(int(shapes["class_probabilities"][-1]))

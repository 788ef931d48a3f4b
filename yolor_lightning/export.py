"""``python -m yolor_lightning.export ckpt=PATH [out=DIR] [image_size=N]``: the folded model.

Loads a training checkpoint (its EMA weights), folds every implicit tensor into the neighbouring
convolution (:func:`yolor_lightning.implicit.fold`) and writes, into ``out`` (default: an
``export/`` folder beside the checkpoint):

- ``model_folded.pt``: the plain network's ``state_dict`` with the config that rebuilds it
  (:func:`load_folded`); the folded network is the baseline architecture, implicit sites gone;
- ``model_folded.onnx``: the folded network in its inference form (batch norms and RepConvN
  branches fused into their convolutions, :func:`yolor_lightning.models.fusion.fuse`; the group
  norms of a ``model.norm=gn`` network stay in the graph, counted in ``unfolded_norms``);
  images ``[B, 3, S, S]`` float in [0, 1] -> one output per task the
  network has: ``predictions`` ``[B, N, 5+nc]`` (det: cx, cy, w, h in pixels, objectness and class
  probabilities, ready for NMS), ``class_probabilities`` ``[B, nc]`` (cls), and
  ``embeddings_p3``, ``embeddings_p4``, ``embeddings_p5`` ``[B, D, S/s, S/s]`` (emb: L2-normalised
  per cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING
from torch import Tensor, nn

from yolor_lightning.atomic import atomic_path
from yolor_lightning.callbacks.checkpoint_io import atomic_torch_save
from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.cli import tool_config
from yolor_lightning.implicit import fold
from yolor_lightning.models import UnifiedNetwork, build_network
from yolor_lightning.models.fusion import fuse
from yolor_lightning.predict.categories import categories_of

FOLDED_CHECKPOINT = "model_folded.pt"
FOLDED_ONNX = "model_folded.onnx"


class DeployedNetwork(nn.Module):
    """The network with its outputs made ready to use: decoded boxes, class probabilities,
    normalised embeddings (in the order of `output_names`)."""

    def __init__(self, network: UnifiedNetwork):
        super().__init__()
        self.network = network

    @property
    def output_names(self) -> list[str]:
        names = {
            "det": ["predictions"],
            "cls": ["class_probabilities"],
            "emb": [
                f"embeddings_p{level + 3}" for level in range(len(self.network.neck.out_channels))
            ],
        }
        return [name for task in self.network.tasks for name in names[task]]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.network(images)
        ready: list[Tensor] = []
        for task in self.network.tasks:
            if task == "det":
                ready.append(self.network.heads["det"].decode(outputs["det"]))
            elif task == "cls":
                ready.append(outputs["cls"].sigmoid())
            else:
                ready += [F.normalize(level, dim=1) for level in outputs["emb"]]
        return tuple(ready)


def deployed_form(network: UnifiedNetwork) -> UnifiedNetwork:
    """The network as it is deployed: PGI's auxiliary branch dropped (it trains, never deploys)
    and every implicit tensor folded into its convolution; a copy, in eval mode."""
    folded = fold(network.eval().without_auxiliary())
    return folded.to(memory_format=torch.contiguous_format).eval()


def load_folded(path: str | Path) -> UnifiedNetwork:
    """Rebuild the plain network written by :func:`export`."""
    saved = load_checkpoint(path)
    network = build_network(saved)
    network.load_state_dict(saved["state_dict"])
    return network.eval()


def export(ckpt: str | Path, out: str | Path | None = None, image_size: int | None = None) -> dict:
    """Fold the checkpoint's network and write it as a checkpoint and as ONNX; return the paths
    and `unfolded_norms`, the group norms left in the ONNX graph (`model.norm=gn`)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: no such checkpoint file")
    checkpoint = load_checkpoint(ckpt)
    module = module_from_checkpoint(checkpoint)
    folded = deployed_form(module.network)
    model = module.hparams.model
    size = image_size or checkpoint.get("datamodule_hyper_parameters", {}).get("image_size")
    if not size:
        raise ValueError(f"{ckpt} does not record the image size: pass image_size=N")
    out_dir = Path(out) if out else ckpt.parent / "export"
    out_dir.mkdir(parents=True, exist_ok=True)

    weights = out_dir / FOLDED_CHECKPOINT
    atomic_torch_save(
        {
            **{part: str(model[part]) for part in ("backbone", "neck", "head") if part in model},
            "size": str(model["size"]),
            "num_classes": int(model["num_classes"]),
            "tasks": list(folded.tasks),
            "embedding_dim": int(model.get("embedding_dim", 128)),
            "norm": str(model.get("norm", "bn")),
            "image_size": int(size),
            "categories": categories_of(checkpoint),
            "folded_from": {"checkpoint": str(ckpt), "implicit": model.get("implicit")},
            "state_dict": folded.state_dict(),
        },
        weights,
    )
    onnx_path = out_dir / FOLDED_ONNX
    fused = fuse(folded)
    _export_onnx(DeployedNetwork(fused).eval(), int(size), onnx_path)
    unfolded = sum(isinstance(m, nn.GroupNorm) for m in fused.modules())
    return {
        "checkpoint": weights,
        "onnx": onnx_path,
        "image_size": int(size),
        "unfolded_norms": unfolded,
    }


def _export_onnx(deployed: DeployedNetwork, image_size: int, path: Path) -> None:
    example = torch.rand(1, 3, image_size, image_size)
    with atomic_path(path) as temporary:
        torch.onnx.export(
            deployed,
            (example,),
            temporary,
            input_names=["images"],
            output_names=deployed.output_names,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", max=1024)}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )


@dataclass
class ExportSchema:
    """Types of conf/export.yaml."""

    ckpt: str = MISSING
    out: str | None = None
    image_size: int | None = None


ConfigStore.instance().store(name="export_schema", node=ExportSchema)


def main(argv: list[str] | None = None) -> None:
    cfg = tool_config("yolor_lightning.export", "export", argv)
    written = export(cfg.ckpt, cfg.out, cfg.image_size)
    print(f"folded checkpoint: {written['checkpoint']}")
    print(f"ONNX ({written['image_size']}x{written['image_size']}): {written['onnx']}")
    if written["unfolded_norms"]:
        print(
            f"model.norm=gn: {written['unfolded_norms']} GroupNorm layers stay in the ONNX graph, "
            "not folded into their convolutions (group norm normalises each image by its own "
            "statistics)"
        )


if __name__ == "__main__":
    main()

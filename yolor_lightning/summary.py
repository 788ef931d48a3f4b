"""``python -m yolor_lightning.summary [overrides] [summary.format=json]``: parameters and GFLOPs.

Takes the same overrides as training and prints the exact parameter count and the GFLOPs at the
configured image size (``data.image_size``), in training form, with the implicit knowledge
folded into the prediction convs (``params_folded``, ``gflops_folded``) and in inference form
(``params_fused``, ``gflops_fused``: batch norms and RepConvN branches fused too), as a table
or as JSON (``summary.format=json``, or ``--json`` for short).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from yolor_lightning.analysis.complexity import count_gflops, count_parameters, model_cost
from yolor_lightning.cli import ToolConfigError, tool_config
from yolor_lightning.config import check_values, plain
from yolor_lightning.models import build_network
from yolor_lightning.results import implicit_choices


def summarize(cfg: DictConfig) -> dict[str, Any]:
    check_values(cfg)
    model = plain(cfg.model)
    with torch.device("meta"):  # shapes are all that counting needs
        network = build_network(model)
    cost = model_cost(network, cfg.data.image_size)
    return {
        "experiment": cfg.experiment_name,
        "model": model["name"],
        "size": model["size"],
        "parts": f"{model['backbone']} + {model['neck']} + {model['head']} head",
        "num_classes": model["num_classes"],
        "tasks": "+".join(model["tasks"]),
        "image_size": cfg.data.image_size,
        "implicit": implicit_choices(model["implicit"])["implicit"],
        **{key: round(value, 3) if "gflops" in key else value for key, value in cost.items()},
        **cost_of_classification_form(network.backbone),
    }


def cost_of_classification_form(backbone: torch.nn.Module) -> dict[str, int | float]:
    """Parameters and GFLOPs at 224 of the backbone's ImageNet form, for a backbone whose
    official counts are given for it (`classification_form()`: RevCol); else nothing."""
    if not hasattr(backbone, "classification_form"):
        return {}
    with torch.device("meta"):
        classifier = backbone.classification_form()
    return {
        "params_classification": count_parameters(classifier),
        "gflops_classification_224": round(count_gflops(classifier, 224), 3),
    }


FORMATS = ("table", "json")


def print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['model']} ({summary['size']})")
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, str(value))
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    cfg = tool_config("yolor_lightning.summary", "summary", argv, {"--json": "summary.format=json"})
    if cfg.summary.format not in FORMATS:
        allowed = ", ".join(FORMATS)
        raise ToolConfigError(f"summary: summary.format={cfg.summary.format!r}: allowed {allowed}")
    summary = summarize(cfg)
    if cfg.summary.format == "json":
        print(json.dumps(summary))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()

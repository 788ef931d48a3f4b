"""``python -m yolor_lightning.summary [overrides] [--json]``: parameters and GFLOPs of a config.

Takes the same overrides as training and prints the exact parameter count and the GFLOPs at the
configured image size (``data.image_size``), as a table or, with ``--json``, as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from yolor_lightning.analysis.complexity import count_gflops, count_parameters
from yolor_lightning.config import check_values, compose_config
from yolor_lightning.models import build_yolov4_csp


def summarize(cfg: DictConfig) -> dict[str, Any]:
    check_values(cfg)
    network = build_yolov4_csp(cfg.model.size.name, num_classes=cfg.model.num_classes)
    return {
        "experiment": cfg.experiment_name,
        "model": cfg.model.name,
        "size": cfg.model.size.name,
        "num_classes": cfg.model.num_classes,
        "image_size": cfg.data.image_size,
        "params": count_parameters(network),
        "gflops": round(count_gflops(network, cfg.data.image_size), 3),
    }


def print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['model']} ({summary['size']})")
    for column in summary:
        table.add_column(column, justify="right")
    table.add_row(*(str(value) for value in summary.values()))
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in arguments
    overrides = [argument for argument in arguments if argument != "--json"]
    summary = summarize(compose_config(overrides))
    if as_json:
        print(json.dumps(summary))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()

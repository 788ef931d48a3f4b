"""``results.json``: the contract between a run and the tools that compare runs (report, W&B)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolor_lightning.atomic import atomic_path
from yolor_lightning.models.sites import SITE_LABELS, enabled_sites

RESULTS_FILE = "results.json"


def write_results(output_dir: Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically (temporary file, then rename), as strict JSON: a NaN
    or an infinity raises ``ValueError`` instead of being written as a bare ``NaN``."""
    path = Path(output_dir) / RESULTS_FILE
    text = json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def implicit_choices(implicit: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """The implicit-knowledge choices of a run: `sites` (enabled sites only, as
    `{"fa": {"operator": "add", "prior": "vector"}, ...}`) and `implicit`, the same as one
    string (`fa:add:vector+pr:mul:vector`, or `none`)."""
    sites = {
        SITE_LABELS[site]: {"operator": options["operator"], "prior": options["prior"]}
        for site, options in enabled_sites(implicit).items()
    }
    label = "+".join(f"{site}:{c['operator']}:{c['prior']}" for site, c in sites.items())
    return {"sites": sites, "implicit": label or "none"}

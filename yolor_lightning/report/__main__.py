"""``python -m yolor_lightning.report folders=[DIR,...] [out=DIR] [baseline=NAME] [metric=AP]
[resamples=1000] [bootstrap_seed=0] [experiments=[NAME,...]]``: the report of runs (see
conf/report.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, ListConfig

from yolor_lightning.cli import ToolConfigError, tool_config
from yolor_lightning.report import ReportError, write_report
from yolor_lightning.report.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED


@dataclass
class ReportSchema:
    """Types of conf/report.yaml; ``folders`` is one folder or a list of them."""

    folders: Any = MISSING
    out: str | None = None
    baseline: str | None = None
    metric: str = "AP"
    resamples: int = DEFAULT_RESAMPLES
    bootstrap_seed: int = DEFAULT_SEED
    experiments: list[str] | None = None


ConfigStore.instance().store(name="report_schema", node=ReportSchema)


def main(argv: list[str] | None = None) -> None:
    cfg = tool_config("yolor_lightning.report", "report", argv)
    folders = list(cfg.folders) if isinstance(cfg.folders, ListConfig) else [cfg.folders]
    try:
        report = write_report(
            [Path(folder) for folder in folders],
            Path(cfg.out) if cfg.out else None,
            cfg.baseline,
            cfg.metric,
            cfg.resamples,
            cfg.bootstrap_seed,
            None if cfg.experiments is None else list(cfg.experiments),
        )
    except ReportError as error:
        raise ToolConfigError(f"yolor_lightning.report: error: {error}") from None
    print(report.markdown)
    for path in report.paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

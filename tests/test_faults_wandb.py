"""With an API key and no reachable W&B server, a run logs offline after one warning, within
seconds (W&B alone would stall about 100 s, then fail the run). Real wandb, real sockets."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from yolor_lightning.loggers import build_loggers, finish_wandb

LOGGER = OmegaConf.create(
    {"csv": False, "wandb": {"project": "test", "entity": None, "mode": None, "tags": []}}
)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a stalled network)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("server", ["refusing", "silent"])
def test_online_run_without_a_reachable_server_logs_offline_within_seconds(
    server, silent_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    url = {"refusing": "http://127.0.0.1:9", "silent": silent_server}[server]
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="yolor_lightning.loggers"):
        (wandb_logger,) = build_loggers(LOGGER, tmp_path, run_name="r", group="g", config={})
        wandb_logger.log_metrics({"train/loss": 1.0}, step=0)
        finish_wandb([wandb_logger], {"final/AP": 0.5})
    assert time.monotonic() - started < 15
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "yolor_lightning.loggers"]
    assert f"W&B server {url} did not answer" in warning and "offline" in warning
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("run-*.wandb"))

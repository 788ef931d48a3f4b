"""What an offline W&B run folder holds: the records of its ``run-<id>.wandb`` file.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks
of chunks, each with a 7-byte header (CRC32C, length, type: 1 full, 2 first, 3 middle, 4 last) —
LevelDB's log format — whose payloads are W&B's protobuf ``Record`` messages. wandb 0.31 ships the
messages (``wandb.proto``) but no Python reader of the log; this is the reader.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, LAST = 1, 4
# How long W&B's service may take to write a finished run's last records (seconds).
WRITE_TIMEOUT = 120.0


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, chunks = HEADER, []
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # too small for a chunk header: padding
            position += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + HEADER])
        if position + HEADER + length > len(data):  # a chunk still being written
            break
        chunks.append(data[position + HEADER : position + HEADER + length])
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def finished_records(folder: Path) -> list[wandb_internal_pb2.Record]:
    """The records of an ``offline-run-*`` folder's log, once W&B has written all of them.

    ``run.finish()`` returns once W&B's service has received the run's last records, not once it
    has written them: the tail of the log (the last history row, the summary, the exit record)
    can reach the file a moment later, which a test reading the log right after an in-process run
    would miss. A finished run's log ends with its exit record, so wait for that.
    """
    (log,) = folder.glob("run-*.wandb")
    deadline = time.monotonic() + WRITE_TIMEOUT
    while True:
        written = list(records(log))
        if written and written[-1].WhichOneof("record_type") == "exit":
            return written
        assert time.monotonic() < deadline, f"{log} has no exit record after {WRITE_TIMEOUT} s"
        time.sleep(0.1)


@dataclass
class OfflineRun:
    id: str
    name: str
    group: str
    job_type: str
    tags: list[str]
    config: dict[str, Any]
    summary: dict[str, Any]


def _apply(target: dict[str, Any], items: Any) -> None:
    for item in items:
        target[".".join(item.nested_key) or item.key] = json.loads(item.value_json)


def read_run(folder: Path) -> OfflineRun:
    """The run of an ``offline-run-*`` folder, with its config and summary as last updated.

    For runs of processes that have exited (W&B's teardown at exit writes the whole log); a run
    preempted and requeued may have no exit record, so this does not wait for one.
    """
    (log,) = folder.glob("run-*.wandb")
    run, config, summary = None, {}, {}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            _apply(config, run.config.update)
        elif kind == "config":
            _apply(config, record.config.update)
        elif kind == "summary":
            _apply(summary, record.summary.update)
    assert run is not None, f"{log} has no run record"
    return OfflineRun(
        run.run_id, run.display_name, run.run_group, run.job_type, list(run.tags), config, summary
    )


def offline_runs(run_folder: Path) -> list[OfflineRun]:
    """Every W&B run a run folder holds, oldest first."""
    return [read_run(folder) for folder in sorted(run_folder.glob("wandb/offline-run-*"))]


def history(folder: Path) -> list[dict[str, Any]]:
    """The rows an ``offline-run-*`` folder's finished run logged (``wandb.log``), in order."""
    rows = []
    for record in finished_records(folder):
        if record.WhichOneof("record_type") == "history":
            row: dict[str, Any] = {}
            _apply(row, record.history.item)
            rows.append(row)
    return rows

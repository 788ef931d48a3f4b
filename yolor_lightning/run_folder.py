"""One run per folder: a new run claims its folder, a resume continues the run that is there.

Run folders are named to the microsecond (``conf/train.yaml``), so two runs started together get
two folders; the claim makes sure of it even when two runs are pointed at one folder (the same
explicit ``hydra.run.dir``): the second is refused before it writes anything, instead of both
writing into one folder and one run's results being lost.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from yolor_lightning.atomic import remove_stale_temporaries
from yolor_lightning.cluster import submitit_executor

CLAIM_FILE = ".run-claim"
RUN_OUTPUTS = ("results.json", "checkpoints", "csv")
"""What a run leaves in its folder: a folder holding any of them holds a run."""


class RunFolderError(RuntimeError):
    """A new run was pointed at a folder that holds (or is claimed by) another run."""


def global_rank() -> int:
    """This process's rank in its distributed run, from the variables the launchers set (0 in a
    single process): only rank 0 claims and tidies the folder."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def run_identity() -> str:
    """What a claim records: a submitit job's id, which a requeued job shares with its first
    attempt (it comes back to its folder), else a new id that no other run shares."""
    if submitit_executor():
        from submitit import JobEnvironment

        return f"submitit-{JobEnvironment().job_id}"
    return uuid.uuid4().hex


def claim_run_folder(output_dir: Path, resuming: bool) -> None:
    """Claim ``output_dir`` for this run, or raise :class:`RunFolderError` naming it.

    A resume (``resuming``) continues the run already there. A new run needs a folder that
    holds no run; the claim file is created exclusively, so of two runs started into one empty
    folder exactly one gets it. Checkpoint and results files half-written by a killed attempt
    are removed.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    claim = output_dir / CLAIM_FILE
    identity = run_identity()
    if resuming:
        claim.write_text(identity + "\n")
    else:
        claimed = _claim_exclusively(claim, identity)
        requeued = not claimed and claim.read_text().strip() == identity
        held = [name for name in RUN_OUTPUTS if (output_dir / name).exists()]
        if not claimed and not requeued:
            held.append(f"{CLAIM_FILE} of another run")
        if held and not requeued:
            if claimed:
                claim.unlink()
            raise RunFolderError(
                f"run folder {output_dir} already holds a run ({', '.join(held)}): a new run "
                "needs a new folder (leave hydra.run.dir at its default), or continue that run "
                "with ckpt_path=last"
            )
    for folder in (output_dir, output_dir / "checkpoints"):
        remove_stale_temporaries(folder)


def _claim_exclusively(claim: Path, identity: str) -> bool:
    """Create ``claim`` holding ``identity``; ``False`` if it exists already."""
    try:
        descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(identity + "\n")
    return True

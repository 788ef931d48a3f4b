"""trainer.threads: torch's thread count next to the DataLoader workers."""

from __future__ import annotations

import inspect
import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from yolor_lightning import environment
from yolor_lightning.callbacks import EvaluationThreads
from yolor_lightning.config import compose_config, plain
from yolor_lightning.environment import compute_threads, evaluation_compute_threads
from yolor_lightning.train import RUN_OPTIONS, process_settings, trainer_arguments


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.usefixtures("eight_cores")
def test_auto_threads_leave_a_core_to_each_data_worker():
    assert compute_threads({"threads": "auto"}, data_workers=2) == 6
    assert compute_threads({"threads": "auto"}, data_workers=0) == 8


@pytest.mark.usefixtures("eight_cores")
def test_auto_threads_keep_at_least_one_thread():
    assert compute_threads({"threads": "auto"}, data_workers=12) == 1


@pytest.mark.usefixtures("eight_cores")
def test_auto_threads_split_the_cores_among_the_ddp_processes_of_the_node():
    trainer = {"threads": "auto", "strategy": "ddp", "devices": 2}
    assert compute_threads(trainer, data_workers=1) == 3


@pytest.mark.usefixtures("eight_cores")
def test_auto_threads_follow_omp_num_threads_when_the_environment_sets_it(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert compute_threads({"threads": "auto"}, data_workers=2) == 3


def test_explicit_thread_count_is_kept_and_null_keeps_torch_default():
    assert compute_threads({"threads": 3}, data_workers=2) == 3
    assert compute_threads({"threads": None}, data_workers=2) is None


@pytest.mark.parametrize("bad", [0, "many", True])
def test_bad_thread_count_names_the_key_and_the_allowed_values(bad: object):
    with pytest.raises(ValueError, match=r"trainer\.threads=.*'auto', null or an integer >= 1"):
        compute_threads({"threads": bad}, data_workers=2)


def test_run_options_are_not_passed_to_lightning_trainer_and_the_rest_are_its_arguments():
    cfg = compose_config([])
    assert set(RUN_OPTIONS) == {"threads", "compile", "keep_freed_memory"}
    assert set(RUN_OPTIONS) <= set(plain(cfg.trainer))
    arguments = set(trainer_arguments(cfg.trainer))
    assert not set(RUN_OPTIONS) & arguments
    assert arguments <= set(inspect.signature(L.Trainer).parameters)


@pytest.mark.usefixtures("eight_cores")
def test_evaluation_takes_every_core_of_a_single_process_with_auto_threads():
    assert evaluation_compute_threads({"threads": "auto"}, training=6) == 8


@pytest.mark.usefixtures("eight_cores")
def test_evaluation_keeps_the_training_threads_where_they_are_set_or_split(
    monkeypatch: pytest.MonkeyPatch,
):
    assert evaluation_compute_threads({"threads": 3}, training=3) == 3
    assert evaluation_compute_threads({"threads": None}, training=None) is None
    ddp = {"threads": "auto", "strategy": "ddp", "devices": 2}
    assert evaluation_compute_threads(ddp, compute_threads(ddp, data_workers=1)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert evaluation_compute_threads({"threads": "auto"}, training=5) == 5


@pytest.mark.usefixtures("eight_cores")
def test_a_second_run_in_one_process_sizes_its_threads_afresh():
    """A multirun's jobs run one after another in one process: the first job's exported
    OMP_NUM_THREADS must not pass for the environment's choice in the next."""
    before = torch.get_num_threads()
    with process_settings(compose_config(["data.num_workers=0"])) as evaluation:
        assert (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], evaluation) == (8, "8", 8)
    assert "OMP_NUM_THREADS" not in os.environ
    assert torch.get_num_threads() == before
    with process_settings(compose_config(["data.num_workers=2"])) as evaluation:
        assert (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], evaluation) == (6, "6", 8)


class ThreadProbe(L.LightningModule):
    """A linear model that records torch's thread count in every training and validation step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.threads: dict[str, set[int]] = {"train": set(), "val": set()}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.threads["train"].add(torch.get_num_threads())
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.threads["val"].add(torch.get_num_threads())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_validation_runs_on_the_evaluation_threads_and_training_on_its_own(tmp_path):
    before = torch.get_num_threads()
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    probe = ThreadProbe()
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[EvaluationThreads(2)],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        torch.set_num_threads(1)
        trainer.fit(probe, loader, loader)
        assert probe.threads == {"train": {1}, "val": {2}}  # sanity check, epochs 0 and 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

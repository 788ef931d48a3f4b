"""trainer.threads: torch's thread count next to the DataLoader workers."""

from __future__ import annotations

import pytest

from yolor_lightning import environment
from yolor_lightning.config import compose_config, plain
from yolor_lightning.environment import compute_threads
from yolor_lightning.train import RUN_OPTIONS, trainer_arguments


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


def test_run_options_threads_and_compile_are_not_passed_to_lightning_trainer():
    cfg = compose_config([])
    assert set(RUN_OPTIONS) == {"threads", "compile"}
    assert set(RUN_OPTIONS) <= set(plain(cfg.trainer))
    assert not set(RUN_OPTIONS) & set(trainer_arguments(cfg.trainer))

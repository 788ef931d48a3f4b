"""trainer.keep_freed_memory: glibc's malloc keeps the memory a step frees for the next step.

A malloc setting lasts for the process, so each case runs in a fresh interpreter."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from yolor_lightning.config import ConfigValueError, check_values, compose_config

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="keep_freed_memory changes glibc's malloc only"
)

# Three 16 MiB blocks at once, as a step's activations, allocated with the C library's malloc
# (torch's own small allocations would land between them at places that depend on the process's
# layout), written and freed: after five rounds (the heap settles, as in a run's first steps) the
# page faults of the next ten rounds, against the pages a round writes.
STEP_LIKE_ROUNDS = """
import ctypes, ctypes.util, resource, sys
from yolor_lightning.heap import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 16 * 2**20
def round_of_blocks():
    blocks = [libc.malloc(size) for _ in range(3)]
    for block in blocks:
        libc.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
for _ in range(5):
    round_of_blocks()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_of_blocks()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(faults / (3 * size / resource.getpagesize()))
"""


def faulted_share_of_written_pages(setting: str) -> float:
    command = [sys.executable, "-c", STEP_LIKE_ROUNDS, setting]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def test_kept_freed_memory_is_reused_without_page_faults():
    assert faulted_share_of_written_pages("kept") < 0.05


def test_glibc_as_it_comes_faults_the_freed_memory_in_again():
    """The control: without the setting the same rounds fault most of their pages in again, so
    the test above measures what the setting changes."""
    assert faulted_share_of_written_pages("as it comes") > 0.5


@pytest.mark.parametrize("key", ["trainer.keep_freed_memory", "trainer.compile"])
def test_a_switch_that_is_not_a_boolean_names_the_key(key: str):
    with pytest.raises(ConfigValueError, match=rf"{key}='yes'.*allowed values are true or false"):
        check_values(compose_config([f"{key}=yes"]))

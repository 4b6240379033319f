"""keep_freed_memory: big blocks freed by one step are reused by the next, not faulted in from the kernel again."""

import subprocess
import sys

import pytest

from recipes.allocator import keep_freed_memory

# 20 rounds of allocating, touching and freeing eight blocks of 8 MB, as a chunk step over many streams does with its
# activations; prints the page faults of the rounds after the first two.
ROUNDS = """
import resource, sys
import numpy as np
from recipes.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def rounds(n):
    for _ in range(n):
        blocks = [np.ones(1_000_000) for _ in range(8)]
        del blocks
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    kept, with_setting = faults("keep")
    _, without = faults("default")
    assert kept == "True"
    assert without > 20 * 2_000  # every round faults most of its 64 MB (16,000 pages of 4 KiB) in anew
    assert with_setting < without / 20


def test_it_reports_whether_the_allocator_took_it():
    assert isinstance(keep_freed_memory(), bool)

"""The training worker's heap stays the size of what it holds over a long run of labels.

Each training run allocates buffers the size of the labelled rows (their stack, the copies the
fit makes) and frees them again; the rows grow with every label. glibc raised its threshold
for giving a block pages of its own to the size of every large block freed, so these buffers
came from the heap, and each run's slightly larger ones no longer fitted the holes the last
run left: the worker's RSS grew by ~300 MiB over 17,685 labels at 100k items while its live
memory stayed flat. The allocation pattern is replayed in a fresh process (the malloc settings
are process-wide) after the worker's own malloc set-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_settings import ROOT, clean_env

RUNS = """
import ctypes, ctypes.util, json
import numpy as np
from curation.worker import limit_malloc_arenas

libc = ctypes.CDLL(ctypes.util.find_library("c"))


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()
    ]


libc.mallinfo2.restype = MallInfo2
limit_malloc_arenas()
kept, stack = [], np.ones(1)
before = libc.mallinfo2()
for run in range(300):
    size = (2 << 20) + run * 16384  # the labelled rows' bytes, a little more every run
    joined = np.ones(size // 8)  # the previous stack and the new rows
    new_stack = joined.copy()  # put in item order: the state keeps this one
    del joined
    stack = new_stack  # the previous stack is freed
    compact = stack[: size // 10].copy()  # the columns the labels use, for the fit
    as_float64 = np.ones(size // 4)  # the fit's float64 copy of the rows
    kept.append(np.ones(50))  # a new label's row, kept
    del compact, as_float64
after = libc.mallinfo2()
print(json.dumps({
    "heap_growth": after.arena - before.arena,
    "free_in_heap": after.fordblks,
    "stack": stack.nbytes,
}))
"""


def glibc_with_mallinfo2() -> bool:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return name is not None and hasattr(ctypes.CDLL(name), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not glibc_with_mallinfo2(), reason="glibc's malloc settings only")
def test_buffers_that_grow_with_every_label_leave_no_free_heap_behind(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + RUNS],
        env=clean_env(tmp_path, DEBUG="1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    heap = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 1024**2
    # Without a fixed threshold, after 300 runs whose largest live buffer was the ~7 MiB stack,
    # ~21 MiB of the heap were free: held by the process, used by nothing.
    assert heap["free_in_heap"] < 4 * mib, heap
    assert heap["heap_growth"] < 4 * mib, heap

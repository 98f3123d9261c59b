"""A training worker that replaces itself once its memory has grown (`manage.py trainworker`).

The worker's live data stays flat over a long run, but its resident memory did not: it grew
from ~270 to ~500 MB over 12,500 labels at 100k items, in free heap space that glibc could not
hand back (benchmarks/README.md, "Where a run's time went"), and two allocator settings
(`curation.worker.limit_malloc_arenas`) only slowed that. Long-running Python workers meet
this with a ceiling and a fresh process (Celery's `--max-memory-per-child`, uWSGI's
`reload-on-rss`, gunicorn's `--max-requests`); the worker can afford it, since everything it
knows is in the database and the model files: a new process catches up with a sweep.

So: after its first training runs (50, or two minutes after the first) the worker notes its RSS as
its baseline (the pool samples and models it needs are loaded by then); once it has grown by
more than `max_growth` beyond that, it retires: it starts no new follow-up job (an analysis, a
version, an estimate: each is due in the database, and the fresh process's start-up sweep finds
it) but keeps training while the jobs in hand finish. It gives them `job_grace` seconds: under
a team at full speed an analysis at 1M items ran for minutes at the worker's low priority, and
meanwhile the process went on growing. Past the grace, each job stops at its next step
(`checkpoint`, where it lets a training run go first anyway) and is left to the fresh process,
due at once: an analysis queued again rather than waiting the 10 minutes its row takes to look
abandoned; an estimate, a dashboard or a version's metrics write nothing until they end, so
they are still due. Then it stops taking messages (they wait in Redis), waits for the training
run in hand, and executes itself again, same command line and process id, so a supervisor sees
nothing. Relative to a baseline rather than an absolute limit: at 1M items a
worker needs several times what it needs at 10k, and a limit below its working set would
recycle it forever.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: Training runs before the baseline is read, or seconds from the start (`MemoryCeiling`).
SETTLE_RUNS = 50
SETTLE_SECONDS = 120.0
#: Seconds between two looks at the resident memory.
CHECK_SECONDS = 5.0
#: The longest wait for the training in hand once no message is taken any more (the follow-up
#: jobs are done by then); past it the process replaces itself regardless (training reads the
#: database: what a run cut short was doing, the next one does).
DRAIN_SECONDS = 30.0
#: The longest wait for the worker's intakes to stop taking messages once cancelled.
STOP_SECONDS = 5.0
#: Seconds between two looks at the follow-up jobs in hand of a retiring worker.
RETIRE_CHECK_SECONDS = 0.5

#: What a message in hand is (`running`): a training run (or sweep, or webhook delivery), or
#: a follow-up job, which a retiring worker waits for without taking new ones.
TRAINING = "training"
JOB = "job"

_busy = {TRAINING: 0, JOB: 0}
_busy_lock = threading.Lock()
#: Set once the worker retires (`retire`), and once its grace for its jobs in hand is over
#: (`hand_over`).
_retiring = threading.Event()
_handing_over = threading.Event()


class HandedOver(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt
    """Raised at a job's next step once its worker hands its jobs over to the fresh process.
    A BaseException, so the jobs' `except Exception` (which records a failure) lets it by."""


def retire() -> None:
    """From now on this process queues no follow-up job (`retiring`)."""
    _retiring.set()


def retiring() -> bool:
    """Whether this process is replacing itself: jobs found due are left to the fresh one,
    whose start-up sweep finds them (queued here, they would only be dropped)."""
    return _retiring.is_set()


def hand_over() -> None:
    """From now on every job of this process stops at its next `checkpoint`."""
    _handing_over.set()


def checkpoint() -> None:
    """Between two steps of a follow-up job: raise `HandedOver` once the process hands its
    jobs over (never outside a retiring `manage.py trainworker`)."""
    if _handing_over.is_set():
        raise HandedOver


def rss_bytes() -> int:
    """This process's resident memory (0 where /proc is not there to tell)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryCeiling:
    """Tells when a worker has grown by more than `max_growth` bytes since it settled."""

    def __init__(
        self,
        max_growth: int,
        *,
        settle_runs: int = SETTLE_RUNS,
        settle_seconds: float = SETTLE_SECONDS,
        job_grace: float = 60.0,
    ) -> None:
        self.max_growth = max_growth
        #: Seconds the follow-up jobs in hand may run on once the process retires.
        self.job_grace = job_grace
        self.settle_runs = settle_runs
        self.settle_seconds = settle_seconds
        #: When a look first found a run done: the time to settle counts from there.
        self.first_run_seen: float | None = None
        self.baseline: int | None = None

    def exceeded(self, runs: int, rss: int) -> bool:
        """Whether a process that has made `runs` training runs and holds `rss` bytes should
        be replaced. The first reading after `settle_runs` runs becomes the baseline, or
        `settle_seconds` after the first run: under a team at full speed, runs are paced and
        the worker gets the CPU last, so 50 of them took more than five minutes. Not from the
        start: a fresh process's first run rebuilds its state from every label, which took
        more than two minutes under such a team, and the RSS just after it (its peaks still
        in the heap) is no baseline."""
        now = time.monotonic()
        if runs > 0 and self.first_run_seen is None:
            self.first_run_seen = now
        settled = runs >= self.settle_runs or (
            self.first_run_seen is not None and now - self.first_run_seen >= self.settle_seconds
        )
        if not settled or rss <= 0:
            return False
        if self.baseline is None:
            self.baseline = rss
            logger.info("training worker settled at %.0f MiB after %s runs", rss / 2**20, runs)
            return False
        return rss > self.baseline + self.max_growth


@contextmanager
def running(kind: str = TRAINING) -> Iterator[None]:
    """Marks a message of `kind` (`TRAINING` or `JOB`) in hand: the worker waits for it before
    replacing itself."""
    with _busy_lock:
        _busy[kind] += 1
    try:
        yield
    finally:
        with _busy_lock:
            _busy[kind] -= 1


def busy(kind: str | None = None) -> int:
    """Messages of `kind` in hand right now (None: of any kind)."""
    with _busy_lock:
        return sum(_busy.values()) if kind is None else _busy[kind]


def replace_process() -> None:
    """Execute this process's command line again, in place (same process id). Called from the
    event loop, so no database connection is closed first (Django refuses that in async
    code, and the threads' connections are not this thread's): the exec closes them all, and
    PostgreSQL rolls back what a run cut short had not committed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

"""`manage.py trainworker`: the training worker for production (one or more processes).

Listens on the `training` channel like `manage.py runworker training`, which still works, but
also survives a restart of Redis (it retries with backoff and keeps training from the database
meanwhile) and sweeps the database at start-up and every `TRAINING_SWEEP_SECONDS`, so a worker
that starts, or that lost its wake-up calls, catches up by itself (`curation.worker`). Run it
under a supervisor that restarts it (docs/deploy/dataprep-worker.service).
"""

from __future__ import annotations

import asyncio
import logging
import os

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from curation import recycling
from curation.worker import (
    TRAINING_CHANNEL,
    TrainingWorker,
    limit_malloc_arenas,
    training_application,
)

logger = logging.getLogger(__name__)

#: Seconds a worker keeps a database connection. Its messages run on a small, fixed pool of
#: threads, so unlike the web server's per-request threads it holds a handful of connections at
#: most, and each training request is spared a new one (~1 ms of CPU, 5-10 ms of waiting).
WORKER_CONN_MAX_AGE = 300


def keep_connections() -> None:
    """Persistent connections for this process, unless settings chose otherwise (a pool, or
    DB_CONN_MAX_AGE): health checks before reuse stay on (`dataprep_site.settings`)."""
    for alias in connections:
        options = connections.settings[alias]
        if options.get("CONN_MAX_AGE") == 0 and "pool" not in options.get("OPTIONS", {}):
            options["CONN_MAX_AGE"] = WORKER_CONN_MAX_AGE


class Command(BaseCommand):
    help = "Run a training worker: trains projects as labels arrive, and sweeps the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sweep-seconds",
            type=float,
            default=None,
            help="Seconds between two sweeps of the database "
            "(default: TRAINING_SWEEP_SECONDS, 30).",
        )

        parser.add_argument(
            "--max-memory-growth",
            type=int,
            default=None,
            metavar="MB",
            help="Replace the process with a fresh one once its memory has grown by this many "
            "MB since it settled; 0: never (default: TRAINING_WORKER_MAX_GROWTH_MB, 128).",
        )
        parser.add_argument(
            "--job-grace",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Seconds the follow-up jobs in hand may run on once the process is replacing "
            "itself; past them each stops at its next step and is left to the fresh process "
            "(default: TRAINING_WORKER_JOB_GRACE_SECONDS, 60).",
        )
        parser.add_argument(
            "--settle-runs",
            type=int,
            default=recycling.SETTLE_RUNS,
            help="Training runs before the memory that growth is measured from is read "
            f"(default {recycling.SETTLE_RUNS}).",
        )

    def handle(
        self,
        *args,
        sweep_seconds: float | None,
        max_memory_growth: int | None,
        job_grace: float | None,
        settle_runs: int,
        **options,
    ) -> None:
        layer = get_channel_layer()
        if layer is None:
            raise CommandError("No channel layer is configured (CHANNEL_LAYERS).")
        if sweep_seconds is not None and sweep_seconds <= 0:
            raise CommandError(f"--sweep-seconds must be positive, not {sweep_seconds}.")
        seconds = settings.TRAINING_SWEEP_SECONDS if sweep_seconds is None else sweep_seconds
        growth = (
            settings.TRAINING_WORKER_MAX_GROWTH_MB
            if max_memory_growth is None
            else max_memory_growth
        )
        grace = settings.TRAINING_WORKER_JOB_GRACE_SECONDS if job_grace is None else job_grace
        if growth < 0 or settle_runs < 1 or grace < 0:
            raise CommandError(
                "--max-memory-growth and --job-grace must be 0 or more, --settle-runs 1 or more."
            )
        # Background work: the web server's requests get the CPU first (TRAINING_WORKER_NICE).
        niceness = max(os.getpriority(os.PRIO_PROCESS, 0), settings.TRAINING_WORKER_NICE)
        os.setpriority(os.PRIO_PROCESS, 0, niceness)  # absolute, and never raises priority
        keep_connections()
        limit_malloc_arenas()
        logger.info(
            "training worker on channel %r (%s), sweeping every %s s, nice %s",
            TRAINING_CHANNEL,
            type(layer).__name__,
            seconds,
            niceness,
        )
        ceiling = (
            recycling.MemoryCeiling(growth * 2**20, settle_runs=settle_runs, job_grace=grace)
            if growth
            else None
        )
        worker = TrainingWorker(
            training_application(),
            [TRAINING_CHANNEL],
            layer,
            sweep_seconds=seconds,
            ceiling=ceiling,
        )
        try:
            asyncio.run(worker.arun())
        except KeyboardInterrupt:
            logger.info("training worker stopped")

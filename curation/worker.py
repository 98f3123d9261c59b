"""The training worker: a Channels consumer on the `training` channel, and the process that runs it.

An annotation that commits sends `{"type": "training.request", "project_id": …}` to the channel
(`request_training_on_commit`). Whichever worker receives it runs `curation.trainer.train` in a
thread, which reads every label from the database under the project's row lock, so:

- the event is only a wake-up call: one lost (Redis down, worker down, server restarted) delays
  training until the next label, the next sweep or the next heartbeat of an open annotate page,
  never loses a label;
- any number of workers can listen: one project trains in one place at a time, and a burst of
  events for one project costs one training plus cheap checks.

`TrainingWorker` (`manage.py trainworker`, and the embedded worker) is the process around the
consumer: it sweeps the database for projects whose model lags behind their labels at start-up
and every `TRAINING_SWEEP_SECONDS`, whatever the channel layer does; it rides out a channel layer
that goes away (a Redis restart) by retrying with backoff, logging the outage once; and it runs
the follow-up jobs of a training run (`curation.jobs`: the accuracy estimate, the weighted
consensus, the data analyses, dataset versions, the dashboard, the prediction endpoint's runs)
as messages to its own consumer, beside the training requests. It also delivers the webhooks' outbox
(`annotations.webhooks.delivery`) on a consumer instance of their own, when an event wakes it
and every `WEBHOOKS_POLL_SECONDS` for the retries that fall due.

Embedded mode (`TRAINING_WORKER=embedded`, the default without Redis): `EmbeddedTrainingWorker`
wraps the ASGI application and starts a `TrainingWorker` on the server's own event loop at the
first request, so the in-memory channel layer (one process) and the demo need no other service.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import math
import threading
import time
from functools import cache
from typing import Any

from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer
from channels.routing import ChannelNameRouter
from channels.worker import Worker
from django.conf import settings
from django.db import close_old_connections
from threadpoolctl import threadpool_limits

from annotations.endpoint_models import PredictionEndpoint
from annotations.queue import purge_expired_leases
from annotations.webhooks.events import DELIVER as WEBHOOKS
from curation import dashboard, dataset_versions, jobs, recycling, services, trainer
from curation.embedded import EmbeddedTrainingWorker
from curation.training_requests import (
    TRAINING_CHANNEL,
    request_training,
    request_training_on_commit,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TRAINING_CHANNEL",
    "EmbeddedTrainingWorker",
    "TrainingConsumer",
    "TrainingWorker",
    "request_training",
    "request_training_on_commit",
    "training_application",
]

#: Backoff while the channel layer is unreachable: first retry, and the longest wait between two.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0

_last_sweep = 0.0
_blas_limited = False
_sweep_lock = threading.Lock()
#: Set while a sweep waits in a TrainingWorker's queue: a sweep slower than the timer must not
#: pile up more of them.
_sweep_queued = threading.Event()
#: Set while a webhook delivery run waits in a TrainingWorker's queue (the same for deliveries).
_deliveries_queued = threading.Event()
#: Training requests between two returns of freed heap memory to the system (`release_memory`).
RELEASE_EVERY = 50
#: glibc malloc arenas for a worker process (`limit_malloc_arenas`).
MALLOC_ARENAS = 2
#: Allocations of at least this many bytes get pages of their own from the system, handed back
#: when freed (`limit_malloc_arenas`).
MALLOC_MMAP_THRESHOLD = 256 * 1024
_requests = 0
#: The consumer instances (`TrainingWorker.dispatch`) that run follow-up jobs.
_JOB_INSTANCES = ("jobs", "analyses", "endpoint")


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """Let the worker's threads share MALLOC_ARENAS glibc arenas, and give every allocation of
    MALLOC_MMAP_THRESHOLD bytes or more pages of its own. A no-op without glibc.

    Arenas: each message runs on one of a pool of threads, and each thread's arena kept the
    peak of the runs it had served (freed memory is kept for reuse).

    The threshold: every run copies arrays of a few hundred KiB to several MiB and frees the
    old ones: the pool sample's blocks (up to ~0.9 MiB per array) as it rotates, and the
    labelled rows' stack and the fit's copies of it, which grow with every label. glibc serves
    large blocks from pages of their own, but raises that threshold to the size of every such
    block freed (up to 32 MiB), so after the first runs they all came from the heap, where the
    new arrays seldom fit the holes the old ones left: the heap grew around free space while
    its live bytes stayed flat (mallinfo2 in the worker), and the RSS by ~300 MiB over 17,685
    labels. A fixed threshold turns the dynamic one off, so these go back to the system when
    freed.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
        libc.mallopt(-3, MALLOC_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def release_memory() -> None:
    """Hand the heap's free pages back to the system (glibc `malloc_trim`; a no-op without)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


#: Under a stream of labels one project trains at most this share of the time: after a run that
#: took T seconds, during which `STREAM_REQUESTS` or more labels arrived, the next run starts
#: T * (1 / share - 1) seconds after it ended at the earliest. A label after a quiet spell, or
#: one annotator's next label, still trains at once.
STREAM_SHARE = 0.5
STREAM_REQUESTS = 2


class TrainingPace:
    """Coalesces and paces one process's training requests, per project.

    Every committed label sends a request; 50 annotators send ~150 a second, and each used to
    queue a training run of its own, run back to back on one of the machine's cores. Now a
    request for a project that already has one waiting is merged into it (the run reads every
    label from the database when it starts, so nothing is lost), and under a stream a project's
    runs are spaced so that training takes at most `STREAM_SHARE` of a core.
    """

    def __init__(self, share: float = STREAM_SHARE) -> None:
        self.share = share
        self._waiting: set[int] = set()  # a request is queued and its run has not started
        self._arrivals: dict[int, int] = {}  # requests since the project's last run started
        self._not_before: dict[int, float] = {}  # monotonic time of the next run's earliest start
        self._lock = threading.Lock()

    def admit(self, project_id: int) -> bool:
        """False when a request for the project is waiting already: this one is merged."""
        with self._lock:
            self._arrivals[project_id] = self._arrivals.get(project_id, 0) + 1
            if project_id in self._waiting:
                return False
            self._waiting.add(project_id)
            trainer.requests_waiting(len(self._waiting))
            return True

    def delay(self, project_id: int) -> float:
        """Seconds to hold the project's next run back (0 unless it is in a stream)."""
        with self._lock:
            return max(0.0, self._not_before.get(project_id, 0.0) - time.monotonic())

    def started(self, project_id: int) -> None:
        """A run begins: labels committed from now on need a request of their own."""
        with self._lock:
            self._waiting.discard(project_id)
            self._arrivals[project_id] = 0
            trainer.requests_waiting(len(self._waiting))

    def finished(self, project_id: int, seconds: float, *, trained: bool) -> None:
        with self._lock:
            if trained and self._arrivals.get(project_id, 0) >= STREAM_REQUESTS:
                gap = seconds * (1 / self.share - 1)
                self._not_before[project_id] = time.monotonic() + gap
            else:
                self._not_before.pop(project_id, None)

    def forget(self) -> None:
        """A worker stopped: the requests it held are gone with it."""
        with self._lock:
            self._waiting.clear()
            self._arrivals.clear()
            self._not_before.clear()
            trainer.requests_waiting(0)


pace = TrainingPace()


def _one_blas_thread() -> None:
    """Training refits small models many times; BLAS thread pools only add contention there
    (digits refits took 243 ms instead of 21 ms per label on a busy 2-core machine)."""
    global _blas_limited
    if not _blas_limited:
        threadpool_limits(1)
        _blas_limited = True


def handle_request(project_id: int) -> trainer.TrainingResult | None:
    """Train one project and queue its due follow-up jobs, then sweep for stale projects if it
    is time; never raises."""
    _one_blas_thread()
    close_old_connections()
    try:
        result = trainer.train(project_id)
        if result is not None:
            jobs.look_soon(project_id)
        return result
    except Exception:
        logger.exception("training project %s failed", project_id)
        return None
    finally:
        _maybe_sweep()
        close_old_connections()
        _count_request()


def _count_request() -> None:
    """Every RELEASE_EVERY requests, after the run: return freed heap memory to the system."""
    global _requests
    _requests += 1
    if _requests % RELEASE_EVERY == 0:
        release_memory()


def sweep() -> list[int]:
    """Train every project whose model has not seen all its labels, and queue the follow-up
    jobs that are due for any project (lost with a worker or with Redis); return the ids of the
    projects trained. Expired leases an hour old are deleted on the way (they no longer count;
    this keeps the table, which every next-item request reads, small)."""
    try:
        purged = purge_expired_leases()
        if purged:
            logger.info("sweep deleted %s expired leases", purged)
    except Exception:
        logger.exception("deleting expired leases failed")
    trained = []
    for project_id in services.stale_projects():
        try:
            if trainer.train(project_id) is not None:
                trained.append(project_id)
        except Exception:
            logger.exception("training project %s failed", project_id)
    for project_id in sorted(
        {
            *services.trained_projects(),
            *services.analysed_projects(),
            *dataset_versions.projects_with_pending_versions(),
            *dashboard.projects_dashboard_due(),
            *PredictionEndpoint.objects.filter(enabled=True).values_list("project_id", flat=True),
        }
    ):
        jobs.jobs_schedule(project_id)
    return trained


def _maybe_sweep() -> None:
    """A sweep after a request when the last one is older than the sweep interval: a worker
    started by `runworker training` has no timer."""
    with _sweep_lock:
        if time.monotonic() - _last_sweep < settings.TRAINING_SWEEP_SECONDS:
            return
    _sweep_now()


def _sweep_now() -> None:
    global _last_sweep
    _sweep_queued.clear()
    with _sweep_lock:
        _last_sweep = time.monotonic()
    _one_blas_thread()
    close_old_connections()
    try:
        trained = sweep()
        if trained:
            logger.info("sweep trained projects %s", trained)
    except Exception:
        logger.exception("sweep for stale projects failed")
    finally:
        close_old_connections()


class TrainingConsumer(AsyncConsumer):
    """Runs each message in a worker thread, so the event loop (in embedded mode, the web
    server's) keeps serving while a model trains; one instance handles its messages one after
    another (`TrainingWorker` gives the follow-up jobs an instance of their own)."""

    #: No channel layer: messages come from the worker's input queue only. With one, Channels
    #: also listens on a channel of the instance's own, and a Redis outage ends the instance,
    #: with the requests waiting in its queue.
    channel_layer_alias = "training-consumer-needs-no-layer"

    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = recycling.JOB if message["type"] in jobs.JOB_TYPES else recycling.TRAINING
        with recycling.running(kind):  # a worker replacing itself waits for it
            await super().dispatch(message)

    async def training_request(self, message: dict[str, Any]) -> None:
        project_id = message["project_id"]
        # Under a stream of labels: wait, while the requests arriving meanwhile merge into this
        # one (`TrainingWorker.dispatch`), so training leaves the cores to the web server.
        await asyncio.sleep(pace.delay(project_id))
        pace.started(project_id)
        began = time.monotonic()
        result = await sync_to_async(handle_request, thread_sensitive=False)(project_id)
        pace.finished(project_id, time.monotonic() - began, trained=result is not None)

    async def training_sweep(self, message: dict[str, Any]) -> None:
        await sync_to_async(_sweep_now, thread_sensitive=False)()

    async def training_look(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, message["at"] - time.monotonic()))
        await sync_to_async(jobs.look_later, thread_sensitive=False)(message)

    async def training_estimate(self, message: dict[str, Any]) -> None:
        await sync_to_async(jobs.job_run, thread_sensitive=False)(message)

    async def training_consensus(self, message: dict[str, Any]) -> None:
        await sync_to_async(jobs.job_run, thread_sensitive=False)(message)

    async def training_analysis(self, message: dict[str, Any]) -> None:
        await sync_to_async(jobs.job_run, thread_sensitive=False)(message)

    async def training_versions(self, message: dict[str, Any]) -> None:
        await sync_to_async(jobs.job_run, thread_sensitive=False)(message)

    async def training_dashboard(self, message: dict[str, Any]) -> None:
        await sync_to_async(jobs.job_run, thread_sensitive=False)(message)

    async def training_endpoint(self, message: dict[str, Any]) -> None:
        await sync_to_async(jobs.job_run, thread_sensitive=False)(message)

    async def training_webhooks(self, message: dict[str, Any]) -> None:
        await sync_to_async(deliver_webhooks, thread_sensitive=False)()


def deliver_webhooks() -> int:
    """Send the webhook deliveries that are due (`annotations.webhooks.delivery`); imported
    here so that a web process never loads the HTTP client."""
    from annotations.webhooks.delivery import deliver_due_safely

    _deliveries_queued.clear()
    return deliver_due_safely()


def training_application() -> ChannelNameRouter:
    """The ASGI application of the training channel (also routed by `dataprep_site.asgi`)."""
    return ChannelNameRouter({TRAINING_CHANNEL: TrainingConsumer.as_asgi()})


class _Outage:
    """Backoff while the channel layer is unreachable, logged once per outage, not per retry."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.delay = RETRY_FIRST_SECONDS

    def failed(self, exc: BaseException) -> float:
        """Note a failed receive; return how long to wait before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            self.delay = RETRY_FIRST_SECONDS
            logger.warning(
                "channel layer unreachable (%r): retrying with backoff; training goes on from "
                "the database every %s s meanwhile",
                exc,
                settings.TRAINING_SWEEP_SECONDS,
            )
        else:
            self.delay = min(self.delay * 2, RETRY_MAX_SECONDS)
        return self.delay

    def recovered(self) -> None:
        """Note that the layer answers again (logged)."""
        if self.since is not None:
            seconds = time.monotonic() - self.since
            logger.warning("channel layer reachable again after %.0f s", seconds)
        self.since = None


class TrainingWorker(Worker):
    """The Channels worker for the training channel, made to run unattended.

    Channels' own worker ends for good on the first error of the channel layer (Redis
    restarted), and it only ever acts on messages. This one retries the layer with backoff and
    meanwhile keeps training from the database: it sweeps at start-up, every
    `sweep_seconds`, and when the layer comes back (the wake-ups sent during the outage are
    lost). Follow-up jobs (`curation.jobs`) go to a consumer instance of their own, so a long
    accuracy estimate never delays the next label's training.
    """

    def __init__(
        self,
        application: Any,
        channels: list[str],
        channel_layer: Any,
        *,
        sweep_seconds: float | None = None,
        ceiling: recycling.MemoryCeiling | None = None,
    ) -> None:
        super().__init__(application, channels, channel_layer)
        self.sweep_seconds = (
            settings.TRAINING_SWEEP_SECONDS if sweep_seconds is None else sweep_seconds
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        #: `manage.py trainworker`'s memory ceiling (`curation.recycling`): past it the process
        #: executes itself again. None (the embedded worker): no ceiling.
        self.ceiling = ceiling
        #: Past the ceiling, waiting for its follow-up jobs: it starts no new one.
        self.retiring = False
        #: Replacing itself: its intakes take no more messages.
        self.stopping = False

    async def handle(self) -> None:
        self.loop = asyncio.get_running_loop()
        jobs.attach_worker(self.submit)
        pace.forget()
        try:
            _sweep_queued.clear()
            _deliveries_queued.clear()
            self.request_sweep()  # catch up with what happened while no worker ran
            tasks = [
                asyncio.ensure_future(intake)
                for intake in (
                    self.sweeper(),
                    self.deliverer(),
                    *(self.listener(channel) for channel in self.channels),
                )
            ]
            if self.ceiling is not None:
                tasks.append(asyncio.ensure_future(self.watch_memory()))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.stopping = True
                for task in tasks:
                    task.cancel()
            for task in done:
                task.result()  # what an intake raised; only `watch_memory` returns
            await self.stop_intakes(tasks)
            await self.drain()
            # From here, not after the loop: closing it would wait for a run still in hand in
            # its thread, which the drain gave up on (what it was doing is done again).
            logger.info("training worker replacing itself with a fresh process")
            recycling.replace_process()
        finally:
            jobs.attach_worker(None)
            jobs.forget_jobs()
            pace.forget()

    async def watch_memory(self) -> None:
        """Return once the process has outgrown its ceiling (`curation.recycling`) and the
        follow-up jobs it had in hand are done, or, past the ceiling's `job_grace`, stopped at
        their next step; it keeps training meanwhile."""
        assert self.ceiling is not None
        while not self.ceiling.exceeded(_requests, recycling.rss_bytes()):
            await asyncio.sleep(recycling.CHECK_SECONDS)
        logger.warning(
            "training worker grew from %.0f to %.0f MiB over %s runs: replacing it with a "
            "fresh process once the work in hand is done",
            (self.ceiling.baseline or 0) / 2**20,
            recycling.rss_bytes() / 2**20,
            _requests,
        )
        self.retiring = True
        recycling.retire()  # no job queued from here (`jobs.jobs_schedule`)
        jobs.attach_worker(None)  # an analysis waiting for a pause in labelling gives up
        dropped = 0
        for kind in _JOB_INSTANCES:  # not started yet: the fresh process's sweep finds them
            instance = self.application_instances.get(kind)
            while instance is not None and not instance["input_queue"].empty():
                instance["input_queue"].get_nowait()
                dropped += 1
        waited = time.monotonic()
        grace_until = waited + self.ceiling.job_grace
        while recycling.busy(recycling.JOB):
            if time.monotonic() >= grace_until:
                # Each stops at its next step, due again for the fresh process.
                logger.info("training worker: handing the jobs in hand over to the fresh one")
                recycling.hand_over()
                grace_until = math.inf
            await asyncio.sleep(recycling.RETIRE_CHECK_SECONDS)
        logger.info(
            "training worker: %s queued jobs left to the fresh process, %.0f s for the jobs "
            "in hand",
            dropped,
            time.monotonic() - waited,
        )

    async def stop_intakes(self, tasks: list[asyncio.Future]) -> None:
        """Wait for the cancelled intakes, at most `recycling.STOP_SECONDS`. A blocking receive
        from Redis can swallow its cancellation (redis-py 8.2 under channels-redis 4.3, with
        messages flowing: 1 cancel in ~5 in `benchmarks/README.md`'s reproduction; known
        upstream, redis/redis-py#2028): such a listener ends at its next message
        (`stopping`), or with the process."""
        _, pending = await asyncio.wait(tasks, timeout=recycling.STOP_SECONDS)
        if pending:
            logger.warning(
                "training worker: %s intake(s) still receiving %s s after being stopped",
                len(pending),
                recycling.STOP_SECONDS,
            )

    async def drain(self) -> None:
        """Wait until no message is queued or in hand (at most `recycling.DRAIN_SECONDS`);
        nothing new comes in meanwhile: the channel's messages wait in Redis."""
        deadline = time.monotonic() + recycling.DRAIN_SECONDS
        idle = 0  # twice in a row: a message taken off a queue is in hand a moment later
        while time.monotonic() < deadline and idle < 2:
            queued = any(
                not instance["input_queue"].empty()
                for instance in self.application_instances.values()
            )
            idle = 0 if queued or recycling.busy() else idle + 1
            await asyncio.sleep(0.1)
        if idle >= 2:
            return
        logger.warning("training worker: work still in hand after %s s", recycling.DRAIN_SECONDS)

    async def listener(self, channel: str) -> None:
        outage = _Outage()
        while True:
            try:
                if outage.since is not None:
                    await self._probe()  # a blocking receive would only tell with a message
                    outage.recovered()
                    self.request_sweep()  # the wake-up calls of the outage were lost
                message = await self.channel_layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarting: the DB keeps the truth
                await asyncio.sleep(outage.failed(exc))
                continue
            if self.stopping:  # its cancellation was swallowed (`stop_intakes`)
                if message.get("type"):
                    self.dispatch(message)  # taken off Redis: the drain runs it
                return
            if not message.get("type"):
                logger.warning("message without a type on %s ignored", channel)
                continue
            self.dispatch(message)

    async def _probe(self) -> None:
        """Raise unless the channel layer answers (channels-redis: a PING to each host)."""
        connection = getattr(self.channel_layer, "connection", None)
        if connection is None:
            return
        for index in range(getattr(self.channel_layer, "ring_size", 1)):
            await connection(index).ping()

    async def sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            self.request_sweep()

    async def deliverer(self) -> None:
        """Webhook retries fall due without a message: look for them every
        `WEBHOOKS_POLL_SECONDS` (new events also send a wake-up)."""
        while True:
            self.dispatch({"type": WEBHOOKS})
            await asyncio.sleep(settings.WEBHOOKS_POLL_SECONDS)

    def request_sweep(self) -> None:
        """Queue a sweep unless one is waiting already."""
        if not _sweep_queued.is_set():
            _sweep_queued.set()
            self.dispatch({"type": "training.sweep"})

    def dispatch(self, message: dict[str, Any]) -> None:
        """Hand a message to the consumer: jobs to one instance, the rest to another. A training
        request for a project that has one waiting already is merged into it (`pace`); a
        retiring worker (`watch_memory`) starts no new job."""
        if message["type"] == "training.request" and not pace.admit(message["project_id"]):
            return
        if self.retiring and message["type"] in jobs.JOB_TYPES:
            return
        if message["type"] == WEBHOOKS:
            # Their own consumer instance: a slow receiver never holds up training. One run
            # at a time: a run delivers everything due, so a wake-up that finds one queued is
            # merged into it.
            if _deliveries_queued.is_set():
                return
            _deliveries_queued.set()
            kind = "webhooks"
        elif message["type"] in (jobs.ANALYSIS, jobs.VERSIONS):  # long: not before the estimate
            kind = "analyses"
        elif message["type"] == jobs.ENDPOINT:  # a slow model server holds up nothing else
            kind = "endpoint"
        elif message["type"] == jobs.LOOK:  # it waits for its time: never behind a job
            kind = "looks"
        else:
            kind = "jobs" if message["type"] in jobs.JOB_TYPES else "training"
        scope = {"type": "channel", "channel": TRAINING_CHANNEL}
        self.get_or_create_application_instance(kind, scope).put_nowait(message)

    async def application_exception(self, exception: BaseException, details: dict) -> None:
        """A consumer instance ended: what was queued in it is gone, so forget it and catch up
        from the database, on a new instance (the dead one is dropped first)."""
        await super().application_exception(exception, details)
        for key, instance in list(self.application_instances.items()):
            if instance is details:
                del self.application_instances[key]
        pace.forget()
        jobs.forget_jobs()
        _sweep_queued.clear()
        _deliveries_queued.clear()
        self.request_sweep()

    def submit(self, message: dict[str, Any]) -> None:
        """`dispatch` from any thread (the training threads queue follow-up jobs here)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.dispatch, message)


def log_exit(task: asyncio.Task) -> None:
    """Log why an embedded worker stopped (`curation.embedded`)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("embedded training worker stopped", exc_info=task.exception())

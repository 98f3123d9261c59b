#!/usr/bin/env python
"""Retraining latency of the model in the loop: from a label's commit to the re-ranked queue
being announced on the project's websocket group, on PostgreSQL + Redis with an external
training worker (`manage.py trainworker`), for projects of 10k, 100k and 1M text items.

    python benchmarks/retrain_latency.py                  # 10k, 100k and 1M items: ~9 min
    python benchmarks/retrain_latency.py --sizes 10000,100000 --labels 40

(`benchmarks/retrain_memory.py` runs the worker through 10,000 labels and reports its memory.)

Per size it recreates the scratch database (`--database-url`, default `dataprep_retrain_bench`;
dropped at the end unless `--keep-db`), migrates it, COPYs N items whose texts are the airline
tweets of the demo (`annotations.demo.airline_tweets()`, cycled, so the hashed features are
real ones), flushes the Redis database (`--redis-url`, default db 14) and starts one training
worker subprocess. Then one annotator labels in this process exactly as the annotate view does
(`queue.next_items` → `annotation_submit` with the tweet's true label), one label at a time:

- t_commit: the commit of the label's transaction (an on_commit hook registered before
  `annotation_submit`'s own, so the training request and progress events it sends after commit
  are inside the measured time);
- t_announce: arrival of the first "model.updated" whose `labels_used` includes this label;
- the next label only after that announcement (a sequential annotator, the worst case for
  waiting: every label trains).

How the announcement is heard: if `annotations.consumers.ProjectConsumer` has a `model_updated`
handler, through a real websocket (`ws/projects/<pk>/` on a uvicorn server, logged in with a
session cookie; the consumer's `{"type": "model", …}` messages). Until then, by joining the
project's channel-layer group `project-<pk>` on a fresh channel name from this process, which
is exactly what the websocket consumer does in `connect()`; that path leaves out only the
consumer's forward to the browser (`--via group|websocket` forces one).

Phases per size: warm-up labels (at least `--warmup`, and until the model is warm: the queue
keeps its random order until every class has 3 labels), `--quiet-labels` with nothing else
running, then `--labels` while a second annotator (another process) asks for its next item
every `--hammer-interval` s over HTTP, as the annotate page does (`GET
/projects/<pk>/annotate/next/?count=1`, a new connection per request, to uvicorn with
`--server-workers` processes, timed like `benchmarks/next_item.py`), then gives the lease back
(in its process, untimed, as a submission would) and records its latency; requests that start
between a label's commit and its announcement count as "while retraining". The training
worker's VmHWM (/proc/<pid>/status) is read before it is stopped; a new worker then takes one
more label (the first run of a worker rebuilds its state from the database: "after restart").
Last, `--breakdown` calls of `trainer.train` in this process give the CPU time of the
trainer's steps (`TrainingResult.cpu_ms`, plus a few inner functions timed by wrapping them
here; the trainer is not changed). CPU time, unlike wall time, hardly depends on other load on
the machine.

Redis: `channel_layers_for` sets a 30 s read timeout, since redis-py 8's default 5 s read
timeout equals channels-redis's 5 s blocking receive and ended idle workers (see
`layer_redis_url`).

Results go to stdout and benchmarks/results/retrain_latency.md. See benchmarks/README.md for the
loading helpers and settings this shares with benchmarks/next_item.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and the apps importable
    sys.path.insert(0, str(ROOT))

from benchmarks.next_item import (  # noqa: E402  (needs ROOT on sys.path)
    Annotator as HttpClient,
)
from benchmarks.next_item import (  # noqa: E402
    _tables,
    base_env,
    commit,
    django_setup,
    ensure_database,
    idle_percent,
    login,
    migrate,
    next_item,
    percentiles,
    prepare_users,
    running_server,
    settle_item_analyses,
    vacuum_analyze,
)
from benchmarks.processes import TrainingWorker  # noqa: E402  (needs ROOT on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable
ANNOTATOR, OTHER = "bench-annotator-0", "bench-annotator-1"  # names made by prepare_users
GB = 1024**3

# --------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/dataprep_retrain_bench",
        help="scratch PostgreSQL database: DROPPED and created again for every size",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="flushed first")
    p.add_argument("--sizes", default="10000,100000,1000000", help="items per project")
    p.add_argument("--warmup", type=int, default=30, help="labels before measuring (at least)")
    p.add_argument("--quiet-labels", type=int, default=40, help="measured labels, no other load")
    p.add_argument(
        "--labels", type=int, default=60, help="measured labels while another annotator works"
    )
    p.add_argument(
        "--hammer-interval",
        type=float,
        default=0.02,
        help="pause (s) between the other annotator's next-item requests",
    )
    p.add_argument(
        "--idle-seconds", type=float, default=3.0, help="next-item baseline, no training"
    )
    p.add_argument("--breakdown", type=int, default=30, help="in-process trainer.train calls")
    p.add_argument(
        "--server-workers", type=int, default=2, help="uvicorn processes (the README's setup)"
    )
    p.add_argument("--via", choices=("auto", "group", "websocket"), default="auto")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait per announcement")
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the training worker (repeatable), e.g. DB_CONN_MAX_AGE=60",
    )
    p.add_argument("--keep-db", action="store_true", help="leave the last size's database")
    p.add_argument("--output", default=str(RESULTS / "retrain_latency.md"))
    args = p.parse_args(argv)
    try:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes: {args.sizes!r} is not a comma list of item counts")
    if not args.size_list or min(args.size_list) < 100:
        p.error("--sizes: give at least one item count, each at least 100")
    if min(args.quiet_labels, args.labels) < 2 or args.warmup < 1:
        p.error("--quiet-labels and --labels need at least 2, --warmup at least 1")
    if not args.redis_url:
        p.error("--redis-url: the external training worker needs Redis")
    if "bench" not in urlsplit(args.database_url).path:
        p.error("--database-url: it is dropped and created again; name a *bench* database")
    args.layer_redis_url, args.redis_note = layer_redis_url(args.redis_url)
    args.worker_env_dict = {}
    for pair in args.worker_env:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            p.error(f"--worker-env: {pair!r} is not NAME=VALUE")
        args.worker_env_dict[name] = value
    return args


def layer_redis_url(url: str) -> tuple[str, str]:
    """The Redis URL the processes get, and a note for the report (none: used as given).

    redis-py 8 reads with a 5 s socket timeout by default while channels-redis waits for
    messages with a 5 s blocking receive, which ended idle workers and websockets
    (django/channels_redis#422); `dataprep_site.env.channel_layers_for` now sets a longer read
    timeout itself, so the URL needs nothing added.
    """
    return url, ""


# --------------------------------------------------------------------------- database and data


def recreate_database(url: str) -> None:
    """Drop the scratch database (closing any session on it) and create it empty."""
    drop_database(url)
    ensure_database(url)


def drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _copy_text(value: str) -> str:
    """A value for COPY's text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def load_tweets(project_pk: int, size: int, texts: list[str]) -> float:
    """COPY `size` items whose texts cycle through `texts`; returns seconds taken.

    `next_item.load_items` writes synthetic word salad; the trainer's cost depends on real
    feature rows (n-grams per text), so this loads the demo's tweets instead, the same way.
    """
    from django.db import connection, transaction

    from annotations.models import Project
    from annotations.services import add_items_counted

    rng = random.Random(size)
    escaped = [_copy_text(t) for t in texts]
    now = datetime.now(UTC).isoformat()
    columns = (
        "project_id, external_id, text, image, image_format, metadata, priority, "
        "annotation_count, needs_annotation, created_at"
    )
    started = time.perf_counter()
    chunk = 20_000
    with transaction.atomic():
        connection.ensure_connection()
        raw = connection.connection
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY {_tables()['Item']} ({columns}) FROM STDIN") as cp,
        ):
            for start in range(0, size, chunk):
                cp.write(
                    "".join(
                        f"{project_pk}\ttweet-{i:07d}\t{escaped[i % len(escaped)]}\t\t\t{{}}\t"
                        f"{rng.random()!r}\t0\tt\t{now}\n"
                        for i in range(start, min(start + chunk, size))
                    )
                )
        add_items_counted(Project.objects.get(pk=project_pk), size)
    return time.perf_counter() - started


def prepare_project(size: int, texts: list[str]) -> tuple[int, float]:
    """A sentiment project with `size` tweets and two annotator members; (pk, load seconds)."""
    from django.contrib.auth import get_user_model

    from annotations.demo import TWEET_CLASSES
    from annotations.models import Membership
    from annotations.services import project_create

    project = project_create(
        name=f"retrain-bench-{size}",
        classes=list(TWEET_CLASSES),
        instructions="Is the tweet negative, neutral or positive?",
    )
    seconds = load_tweets(project.pk, size, texts)
    settle_item_analyses(project.pk)
    names = prepare_users(2)
    Membership.objects.bulk_create(
        [
            Membership(project=project, user=u, role=Membership.Role.ANNOTATOR)
            for u in get_user_model().objects.filter(username__in=names)
        ]
    )
    vacuum_analyze()
    return project.pk, seconds


# --------------------------------------------------------------------------- training worker


@dataclass
class WorkerProcess(TrainingWorker):
    """The worker process, with the readings this benchmark reports in bytes and its CPU time."""

    def vmhwm_bytes(self) -> int | None:
        """Peak resident set size of the worker process so far (VmHWM)."""
        mib = self.peak_rss_mib()
        return None if mib is None else round(mib * 1024 * 1024)

    def rss_bytes(self) -> int | None:
        """Resident set size of the worker process now (VmRSS)."""
        mib = self.rss_mib()
        return None if mib is None else round(mib * 1024 * 1024)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_worker(env: dict[str, str], args: argparse.Namespace) -> WorkerProcess:
    """Start `manage.py trainworker` and return once it has handled a first message.

    The probe is a training request for a project that does not exist: it proves the worker
    listens, and takes its first stale-project sweep out of the measured runs.
    """
    from curation.worker import TRAINING_CHANNEL, request_training

    fd, name = tempfile.mkstemp(prefix="bench-training-worker-", suffix=".log")
    worker_env = {**env, "LOG_LEVEL": "INFO", **args.worker_env_dict}
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(
            [PYTHON, str(ROOT / "manage.py"), "trainworker"],
            env=worker_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(proc, Path(name))
    deadline = time.monotonic() + 60
    while f"training worker on channel {TRAINING_CHANNEL!r}" not in worker.log_tail():
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise SystemExit(f"the training worker did not start:\n{worker.log_tail()}")
        time.sleep(0.1)
    import redis

    client = redis.Redis.from_url(args.redis_url)
    request_training(0)
    key = "asgi" + TRAINING_CHANNEL  # channels_redis: prefix + channel name
    while client.zcard(key):
        if time.monotonic() > deadline:
            worker.stop()
            raise SystemExit(f"the training worker took no message:\n{worker.log_tail()}")
        time.sleep(0.05)
    time.sleep(0.5)  # the probe's (empty) sweep
    client.close()
    return worker


# --------------------------------------------------------------------------- announcements


@dataclass
class Announcement:
    at: float  # time.monotonic() on arrival
    version: int
    labels_used: int
    cold: bool


class Listener:
    """Collects the project's model announcements in a thread, stamped on arrival."""

    def __init__(self) -> None:
        self.inbox: queue_module.Queue[tuple[float, dict]] = queue_module.Queue()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.project_pk = 0

    def wait_for(self, labels: int, timeout: float) -> Announcement:
        """The first announcement of a model that has seen at least `labels` labels."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                raise SystemExit(
                    f"no model announcement with {labels} labels within {timeout:.0f} s"
                    + (f" ({self.error!r})" if self.error else "")
                ) from None
            used = message.get("labels_used")
            if used is None:  # a websocket message without it: look the version up
                from curation.models import ModelVersion

                used = (
                    ModelVersion.objects.filter(
                        project_id=self.project_pk, version=message["version"]
                    )
                    .values_list("labels_used", flat=True)
                    .first()
                ) or 0
            if used >= labels:
                return Announcement(
                    at, int(message["version"]), int(used), bool(message.get("cold"))
                )

    def drain(self) -> None:
        while not self.inbox.empty():
            self.inbox.get_nowait()


class GroupListener(Listener):
    """Joins `project-<pk>` on a fresh channel name, as ProjectConsumer.connect() does."""

    def __init__(self, redis_url: str, project_pk: int) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.project_pk = project_pk
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="group-listener")

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(10):
            raise SystemExit(f"could not join the project's group: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by wait_for
            self.error = exc

    async def _main(self) -> None:
        from channels_redis.core import RedisChannelLayer

        from annotations.events import project_group

        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        layer = RedisChannelLayer(hosts=[self.redis_url])
        channel = await layer.new_channel()
        group = project_group(self.project_pk)
        await layer.group_add(group, channel)
        self.ready.set()
        try:
            while True:
                message = await layer.receive(channel)
                at = time.monotonic()
                if message.get("type") == "model.updated":
                    self.inbox.put((at, message))
        finally:
            await layer.group_discard(group, channel)
            await layer.close_pools()

    def stop(self) -> None:
        if self.loop is not None and self.task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


class WebsocketListener(Listener):
    """A browser's view: the project's websocket, logged in with a session cookie."""

    def __init__(self, port: int, project_pk: int, cookies: dict[str, str]) -> None:
        super().__init__()
        self.port = port
        self.project_pk = project_pk
        self.cookies = cookies
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="ws-listener")

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(15):
            raise SystemExit(f"the project websocket did not open: {self.error!r}")

    def _run(self) -> None:
        from websockets.sync.client import connect

        headers = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "Origin": f"http://127.0.0.1:{self.port}",
        }
        url = f"ws://127.0.0.1:{self.port}/ws/projects/{self.project_pk}/"
        try:
            with connect(url, additional_headers=headers, open_timeout=10) as ws:
                self.ready.set()
                while not self.stopping.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    at = time.monotonic()
                    data = json.loads(raw)
                    if data.get("type") in {"model", "model.updated"}:
                        self.inbox.put((at, data))
        except BaseException as exc:  # noqa: BLE001 - reported by start/wait_for
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def websocket_ready() -> bool:
    """True once the project consumer forwards model updates to the browser."""
    from annotations.consumers import ProjectConsumer

    return callable(getattr(ProjectConsumer, "model_updated", None))


@contextmanager
def listening(via: str, port: int, args, project_pk: int) -> Iterator[Listener]:
    """Hear the project's announcements: its websocket on the server at `port`, or its group."""
    listener: Listener
    if via == "websocket":
        who = login(port, ANNOTATOR)
        listener = WebsocketListener(port, project_pk, who.cookies)
        listener.start()
        try:
            yield listener
        finally:
            listener.stop()
        return
    listener = GroupListener(args.layer_redis_url, project_pk)
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


# --------------------------------------------------------------------------- the other annotator


def hammer(
    project_pk: int, port: int, who: HttpClient, interval: float, started, stop, results
) -> None:
    """Ask for the next item over HTTP until told to stop; send back (start, ms, from the
    ranked head) per request, or the error that stopped it."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from annotations import queue
    from annotations.models import Item

    user = get_user_model().objects.get(username=who.username)
    samples: list[tuple[float, float, bool]] = []
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            seconds, item_id = next_item(port, project_pk, who)
            # Untimed: give the lease back, as the submission of an answer does, so the next
            # request walks the queue again instead of finding this lease.
            item = Item.objects.only("id", "priority").get(pk=item_id)
            queue.release_lease(item=item, user=user)
            samples.append((t0, seconds * 1000, item.priority >= 1.0))
            if len(samples) == 1:
                started.set()
            time.sleep(interval)
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        started.set()
        results.put(repr(exc))
        return
    results.put(samples)


@dataclass
class Hammer:
    proc: Any
    stop_event: Any
    results: Any

    def finish(self) -> list[tuple[float, float, bool]]:
        self.stop_event.set()
        try:
            samples = self.results.get(timeout=60)
        finally:
            self.proc.join(20)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join()
        if isinstance(samples, str):
            raise SystemExit(f"the other annotator stopped: {samples}")
        return samples


def start_hammer(project_pk: int, port: int, interval: float) -> Hammer:
    """The other annotator, logged in through the login form, in a process of its own."""
    ctx = mp.get_context("spawn")  # this process has threads and open connections: no fork
    started, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    who = login(port, OTHER)
    proc = ctx.Process(
        target=hammer, args=(project_pk, port, who, interval, started, stop, results), daemon=True
    )
    proc.start()
    if not started.wait(60):
        proc.terminate()
        raise SystemExit("the second annotator's process did not start")
    return Hammer(proc, stop, results)


# --------------------------------------------------------------------------- measuring


@dataclass
class Label:
    n: int  # labels in the project with this one
    phase: str  # warmup, quiet, loaded, restart
    t_commit: float
    announced: Announcement
    cpu_ms: float  # the worker's CPU time from before the label to its announcement
    waited: bool = False  # the previous run re-estimated accuracy after its announcement

    @property
    def ms(self) -> float:
        return (self.announced.at - self.t_commit) * 1000


@dataclass
class SizeResult:
    size: int
    load_s: float = 0.0
    via: str = ""
    labels: list[Label] = field(default_factory=list)
    next_samples: list[tuple[float, float, bool]] = field(default_factory=list)
    next_retraining: list[float] = field(default_factory=list)
    next_idle: list[float] = field(default_factory=list)
    outside_head: int = 0  # requests while retraining served from below the ranked head
    outside_head_idle: int = 0  # the same, outside retraining (should be 0 once warm)
    vmhwm: int | None = None
    vmhwm_restart: int | None = None
    durations: dict[str, list[int]] = field(default_factory=dict)  # phase → duration_ms
    stored_timings: dict[str, list[float]] = field(default_factory=dict)
    stored_cpu: dict[str, list[float]] = field(default_factory=dict)  # metrics["cpu_ms"]
    breakdown: list[dict[str, float]] = field(default_factory=list)
    warm_at: int | None = None  # first label announced with a warm model
    idle: float | None = None  # CPU idle % over 2 s before the worker started

    def phase(self, name: str) -> list[float]:
        return [x.ms for x in self.labels if x.phase == name]

    def cpu(self, name: str) -> list[float]:
        return [x.cpu_ms for x in self.labels if x.phase == name]


class Annotator:
    """Labels one item at a time the way the annotate view does, in this process."""

    def __init__(self, project_pk: int, truth: dict[str, str]) -> None:
        from django.contrib.auth import get_user_model

        from annotations.models import Project

        self.project = Project.objects.get(pk=project_pk)
        self.user = get_user_model().objects.get(username=ANNOTATOR)
        self.names = list(
            self.project.label_classes.order_by("order").values_list("name", flat=True)
        )
        self.truth = truth
        self.count = 0

    def label(self) -> float:
        """Take the next item, answer it with its true label; return the commit time."""
        from django.db import transaction

        from annotations import queue
        from annotations.services import annotation_submit

        items = queue.next_items(project=self.project, user=self.user, count=1)
        if not items:
            raise SystemExit("the queue ran dry")
        item = items[0]
        item.project = self.project
        committed: list[float] = []
        with transaction.atomic():
            # Registered before annotation_submit's own hooks, so it runs first after commit.
            transaction.on_commit(lambda: committed.append(time.monotonic()))
            annotation_submit(
                item=item,
                annotator=self.user,
                labels=[self.truth[item.text]],
                time_spent_ms=1500,
                client_uuid=uuid.uuid4(),
                label_names=self.names,
            )
        self.count += 1
        return committed[0]


def label_and_wait(
    annotator: Annotator, listener: Listener, worker: WorkerProcess, phase: str, timeout: float
) -> Label:
    cpu = worker.cpu_seconds()
    t_commit = annotator.label()
    announced = listener.wait_for(annotator.count, timeout)
    cpu_ms = (worker.cpu_seconds() - cpu) * 1000
    return Label(annotator.count, phase, t_commit, announced, cpu_ms)


def run_size(size: int, args, env: dict[str, str], texts: list[str], truth: dict[str, str]):
    from django.db import connection

    result = SizeResult(size)
    connection.close()
    recreate_database(args.database_url)
    migrate(env)
    pk, result.load_s = prepare_project(size, texts)
    print(f"{size:,} items: loaded with COPY in {result.load_s:.1f} s")
    _flush_redis(args.redis_url)
    via = args.via
    if via == "auto":
        via = "websocket" if websocket_ready() else "group"
    result.via = via
    annotator = Annotator(pk, truth)
    result.idle = idle_percent()
    worker = start_worker(env, args)
    try:
        with (
            running_server("uvicorn", args.server_workers, env) as port,
            listening(via, port, args, pk) as listener,
        ):
            _measure(result, args, annotator, listener, port, worker)
            result.vmhwm = worker.vmhwm_bytes()
            worker.stop()
            listener.drain()
            worker = start_worker(env, args)
            result.labels.append(
                label_and_wait(annotator, listener, worker, "restart", args.timeout)
            )
            result.vmhwm_restart = worker.vmhwm_bytes()
    finally:
        worker.stop()
    _versions(result, pk)
    result.breakdown = breakdown(annotator, args.breakdown)
    _flush_redis(args.redis_url)  # the training requests of the in-process runs
    print_size(result)
    return result


def _measure(
    result: SizeResult,
    args,
    annotator: Annotator,
    listener: Listener,
    port: int,
    worker: WorkerProcess,
) -> None:
    t = args.timeout
    while annotator.count < args.warmup or result.warm_at is None:
        label = label_and_wait(annotator, listener, worker, "warmup", t)
        result.labels.append(label)
        if result.warm_at is None and not label.announced.cold:
            result.warm_at = label.n
        if annotator.count > 300:
            raise SystemExit("the model is still cold after 300 labels")
    for _ in range(args.quiet_labels):
        result.labels.append(label_and_wait(annotator, listener, worker, "quiet", t))
    other = start_hammer(annotator.project.pk, port, args.hammer_interval)
    try:
        time.sleep(args.idle_seconds)  # the other annotator alone: the idle baseline
        for _ in range(args.labels):
            result.labels.append(label_and_wait(annotator, listener, worker, "loaded", t))
    finally:
        result.next_samples = other.finish()
    windows = [(x.t_commit, x.announced.at) for x in result.labels if x.phase == "loaded"]
    starts = [w[0] for w in windows]
    for t0, took, ranked in result.next_samples:
        i = bisect_right(starts, t0) - 1
        if i >= 0 and t0 <= windows[i][1]:
            result.next_retraining.append(took)
            result.outside_head += not ranked
        else:
            result.next_idle.append(took)
            result.outside_head_idle += not ranked


def _versions(result: SizeResult, pk: int) -> None:
    """The worker's own clock for the runs announced: ModelVersion.duration_ms (and the step
    timings, if the version's stored metrics hold them)."""
    from curation.models import ModelVersion

    rows = dict(ModelVersion.objects.filter(project_id=pk).values_list("version", "duration_ms"))
    metrics = dict(ModelVersion.objects.filter(project_id=pk).values_list("version", "metrics"))
    previous = None
    for label in result.labels:
        v = label.announced.version
        label.waited = previous is not None and "cv_ms" in (metrics.get(previous) or {})
        previous = v
        if v in rows:
            result.durations.setdefault(label.phase, []).append(rows[v])
        if label.phase in {"quiet", "loaded"}:
            stored = metrics.get(v) or {}
            steps = dict(stored.get("timings_ms") or {})
            if "cv_ms" in stored:  # only runs that re-estimated the accuracy
                steps["cv (after the announcement)"] = stored["cv_ms"]
            for step, ms in steps.items():
                result.stored_timings.setdefault(step, []).append(ms)
            for step, ms in (stored.get("cpu_ms") or {}).items():
                result.stored_cpu.setdefault(step, []).append(ms)


# --------------------------------------------------------------------------- in-process breakdown

#: Inner functions timed during the in-process runs (nested: features are part of the sample
#: refresh, of the label catch-up and of the evaluation predictions).
SUBSTEPS = (
    ("curation.trainer", "_fingerprint", "lock: fingerprint (2 queries)"),
    ("curation.pool_sample", "PoolSample.proba", "rank: score the pool sample"),
    ("curation.pool_sample", "PoolSample.refresh", "after: grow or rotate the pool sample"),
    ("curation.pool_sample", "item_features", "featurize (pool sample)"),
    ("curation.trainer", "item_features", "featurize (labels, evaluation items)"),
    ("curation.learner", "IncrementalLearner.predict_proba", "predict_proba (any caller)"),
    ("curation.trainer", "eval_items_weave", "rank: weave evaluation items"),
    ("curation.trainer", "_write_ranking", "write: the ranking (UPDATE)"),
    ("curation.artifacts", "save_learner", "save: model file"),
    ("curation.evaluation", "eval_predict", "after: predict evaluation items"),
    ("curation.versions", "versions_prune", "after: prune old versions"),
    ("curation.versions", "eval_summary", "eval summary (version row)"),
    ("curation.learner", "IncrementalLearner.estimated_accuracy", "5-fold accuracy estimate"),
)


@contextmanager
def timed_substeps(sink: dict[str, float]) -> Iterator[None]:
    """Wrap SUBSTEPS with timers adding milliseconds to `sink`; restore them afterwards."""
    import importlib

    restore: list[tuple[Any, str, Any]] = []
    for module_name, path, label in SUBSTEPS:
        owner: Any = importlib.import_module(module_name)
        *parents, attr = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
        if owner is None or not callable(getattr(owner, attr, None)):
            print(f"  (no {module_name}.{path} to time: the trainer changed)")
            continue
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        setattr(owner, attr, _timer(original, label, sink))
        restore.append((owner, attr, original))
    try:
        yield
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)


def _timer(func: Callable, label: str, sink: dict[str, float]) -> Callable:
    """`func`, adding the CPU time of this thread it takes to `sink[label]` (ms)."""

    def timed(*a, **kw):
        started = time.thread_time()
        try:
            return func(*a, **kw)
        finally:
            sink[label] = sink.get(label, 0.0) + (time.thread_time() - started) * 1000

    return timed


def breakdown(annotator: Annotator, calls: int) -> list[dict[str, float]]:
    """`calls` label + `trainer.train` rounds in this process (a fresh trainer state: the first
    is a cold rebuild, the next ones fill the pool sample as the worker's first runs did)."""
    from curation import trainer

    trainer.reseed(0)
    trainer.forget_states()
    out = []
    for _ in range(calls):
        annotator.label()
        sub: dict[str, float] = {}
        started = time.thread_time()
        with timed_substeps(sub):
            run = trainer.train(annotator.project.pk, announce=False)
        total = (time.thread_time() - started) * 1000
        if run is None:
            continue
        out.append({**run.cpu_ms, "train() in all": total, **sub})
    trainer.forget_states()
    return out


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


# --------------------------------------------------------------------------- report


def ms(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def mib(v: int | None) -> str:
    return "–" if v is None else f"{v / 1024**2:,.0f} MiB"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def label_at(r: SizeResult, phase: str, n: int | None = None) -> Label | None:
    return next((x for x in r.labels if x.phase == phase and (n is None or x.n == n)), None)


def latency_table(results: list[SizeResult]) -> str:
    out = (
        "| items | quiet p50 | quiet p95 | with another annotator p50 | p95 | max "
        "| labels that waited for a re-estimate | the others: p50 | p95 "
        "| worker run p50 (duration_ms) | worker CPU p50 | labels measured | CPU idle before |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in results:
        q50, q95, _ = percentiles(r.phase("quiet"))
        l50, l95, _ = percentiles(r.phase("loaded"))
        measured = [x for x in r.labels if x.phase in {"quiet", "loaded"}]
        o50, o95, _ = percentiles([x.ms for x in measured if not x.waited])
        d = median(r.durations.get("quiet", []) + r.durations.get("loaded", []))
        out += (
            f"| {r.size:,} | {ms(q50)} | {ms(q95)} | {ms(l50)} | {ms(l95)} "
            f"| {ms(max(x.ms for x in measured))} | {sum(x.waited for x in measured)} "
            f"| {ms(o50)} | {ms(o95)} | {ms(d)} | {ms(median(r.cpu('quiet')))} "
            f"| {len(r.phase('quiet'))} + {len(r.phase('loaded'))} "
            f"| {'?' if r.idle is None else f'{r.idle:.0f}%'} |\n"
        )
    return out


def cold_table(results: list[SizeResult]) -> str:
    out = (
        "| items | first label (new worker, new project) | first ranked queue | "
        "first label after a worker restart |\n|---:|---:|---:|---:|\n"
    )
    for r in results:
        first = label_at(r, "warmup", 1)
        warm = label_at(r, "warmup", r.warm_at)
        restart = label_at(r, "restart")
        out += (
            f"| {r.size:,} | {ms(first.ms if first else None)} "
            f"| {ms(warm.ms if warm else None)} (label {r.warm_at}) "
            f"| {ms(restart.ms if restart else None)} (label {restart.n if restart else '–'}) |\n"
        )
    return out


def next_table(results: list[SizeResult]) -> str:
    out = (
        "| items | idle p50 | idle p99 | while retraining p50 | p99 | max | requests while "
        "retraining | served from below the ranked head: idle | while retraining |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in results:
        i50, _, i99 = percentiles(r.next_idle)
        b50, _, b99 = percentiles(r.next_retraining)
        n = len(r.next_retraining)
        share = f"{100 * r.outside_head / n:.0f}%" if n else "–"
        idle = len(r.next_idle)
        share_idle = f"{100 * r.outside_head_idle / idle:.0f}%" if idle else "–"
        out += (
            f"| {r.size:,} | {ms(i50)} | {ms(i99)} | {ms(b50)} | {ms(b99)} "
            f"| {ms(max(r.next_retraining, default=None))} | {n} | {share_idle} | {share} |\n"
        )
    return out


def memory_table(results: list[SizeResult]) -> str:
    out = "| items | worker VmHWM | VmHWM of a restarted worker after its first run |\n"
    out += "|---:|---:|---:|\n"
    for r in results:
        out += f"| {r.size:,} | {mib(r.vmhwm)} | {mib(r.vmhwm_restart)} |\n"
    return out


def breakdown_table(results: list[SizeResult]) -> str:
    """Median per step of the last runs (pool sample full), and the first (cold) run."""
    subs = [label for _, _, label in SUBSTEPS]
    steps = list(dict.fromkeys(k for r in results for x in r.breakdown for k in x))
    steps = [k for k in steps if k not in subs] + [k for k in subs if k in steps]
    head = "| step | " + " | ".join(f"{r.size:,}: cold | {r.size:,}: warm" for r in results)
    out = head + " |\n|---|" + "---:|---:|" * len(results) + "\n"
    for step in steps:
        cells = []
        for r in results:
            runs = r.breakdown
            steady = runs[-5:] if len(runs) > 5 else runs[1:]
            cold = runs[0].get(step) if runs else None
            warm_values = [x.get(step, 0.0) for x in steady]
            cells += [ms(cold if cold is not None else 0.0), ms(median(warm_values))]
        out += f"| {step.strip()} | " + " | ".join(cells) + " |\n"
    return out


def targets(results: list[SizeResult]) -> list[str]:
    notes = []

    def check(text: str, ok: bool) -> None:
        notes.append(f"{text}: {'PASS' if ok else 'FAIL'}")

    for r in results:
        limit = 150.0 if r.size <= 100_000 else 1500.0
        q50, *_ = percentiles(r.phase("quiet"))
        l50, *_ = percentiles(r.phase("loaded"))
        check(
            f"commit → announcement p50 at {r.size:,}: {q50:,.0f} ms (≤ {limit:,.0f})", q50 <= limit
        )
        check(f"  … with another annotator working: {l50:,.0f} ms (≤ {limit:,.0f})", l50 <= limit)
        _, _, b99 = percentiles(r.next_retraining)
        check(f"next item p99 while retraining at {r.size:,}: {b99:.1f} ms (< 25)", b99 < 25)
        if r.size >= 1_000_000:
            peak = max(r.vmhwm or 0, r.vmhwm_restart or 0)
            check(f"worker peak memory at {r.size:,}: {mib(peak)} (< 2 GiB)", 0 < peak < 2 * GB)
    return notes


def print_size(r: SizeResult) -> None:
    q50, q95, _ = percentiles(r.phase("quiet"))
    l50, l95, _ = percentiles(r.phase("loaded"))
    _, _, b99 = percentiles(r.next_retraining)
    d = median(r.durations.get("quiet", []) + r.durations.get("loaded", []))
    print(
        f"  {r.size:,} items ({r.via}): commit → announcement p50 {ms(q50)} p95 {ms(q95)} ms "
        f"(with another annotator {ms(l50)} / {ms(l95)}); worker run p50 {ms(d)} ms, CPU "
        f"{ms(median(r.cpu('quiet')))} ms; "
        f"next item p99 while retraining {ms(b99)} ms; worker VmHWM {mib(r.vmhwm)}"
    )
    if r.breakdown:
        last = r.breakdown[-1]
        print("  last in-process run: " + ", ".join(f"{k} {ms(v)}" for k, v in last.items()))


def machine_info(idle: float | None, via: set[str], args) -> str:
    import django
    import numpy
    import redis
    import sklearn
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
    client = redis.Redis.from_url(args.redis_url)
    redis_version = client.info("server").get("redis_version", "?")
    client.close()
    cpu, ram = platform.processor() or "", 0
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
        meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        ram = int(meminfo.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    how = {
        "group": "joining the project's channel-layer group (as the websocket consumer does)",
        "websocket": "a real websocket through uvicorn with a session cookie",
    }
    return (
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {ram / GB:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}; CPUs "
        f"{'?' if idle is None else f'{idle:.0f}'}% idle just before the run\n"
        f"- Python {platform.python_version()}, Django {django.get_version()}, PostgreSQL {pg}, "
        f"Redis {redis_version}, NumPy {numpy.__version__}, scikit-learn {sklearn.__version__}\n"
        f"- one `manage.py trainworker` process"
        f"{' with ' + ', '.join(args.worker_env) if args.worker_env else ''}; announcements "
        f"heard by {'; '.join(how[v] for v in sorted(via))}\n"
        f"- per size: ≥ {args.warmup} warm-up labels, {args.quiet_labels} measured labels "
        f"alone, {args.labels} while another annotator asks for its next item every "
        f"{args.hammer_interval * 1000:.0f} ms (+ its latency); items are the demo's airline "
        "tweets, cycled; labels are their true labels\n"
        f"- commit: {commit()}\n" + (f"- **{args.redis_note}**\n" if args.redis_note else "")
    )


def report(results: list[SizeResult], args, idle: float | None) -> str:
    text = (
        "# Retraining latency: label commit → re-ranked queue announced\n\n"
        "Written by `benchmarks/retrain_latency.py` (see its docstring for the method).\n\n"
        + machine_info(idle, {r.via for r in results}, args)
        + "\n## Commit → announcement (ms)\n\n"
        + latency_table(results)
        + "\n`worker run` is the trainer's own clock (`ModelVersion.duration_ms`: from the row "
        "lock to the new version's row, median over the measured labels). The rest of the "
        "latency: the training request through Redis, the worker's new DB connection and "
        "queries before the lock, the evaluation predictions and commit after the version "
        "row, and the announcement through Redis and the websocket. A label whose previous "
        "run re-estimated the accuracy (a 5-fold refit after that run's announcement, when the "
        "labels grew by 50%) ran beside it; `the others` leaves those labels out. "
        "`worker CPU`: the worker "
        "process's user + system CPU time from before a label to its announcement (median "
        "over the quiet labels; 10 ms ticks); unlike the latencies it hardly depends on other "
        "load on the machine.\n\n"
        "## Cold runs (ms)\n\n"
        + cold_table(results)
        + "\n## Next item for another annotator (ms, `GET /projects/<pk>/annotate/next/?count=1` "
        f"over HTTP, a new connection per request, uvicorn with {args.server_workers} "
        "processes)\n\n"
        + next_table(results)
        + "\n## Training worker memory\n\n"
        + memory_table(results)
    )
    stored = [r for r in results if r.stored_timings]
    if stored:
        text += (
            "\n## Step timings the worker stored in ModelVersion.metrics (median ms over the "
            "measured labels; cv over the runs that re-estimated the accuracy)\n\n"
        )
        for r in stored:
            steps = ", ".join(
                f"{k} {ms(median(v))} ({len(v)}×)" if k.startswith("cv") else f"{k} {ms(median(v))}"
                for k, v in r.stored_timings.items()
            )
            text += f"- {r.size:,}: {steps}\n"
    cpu = [r for r in results if r.stored_cpu]
    if cpu:
        text += (
            "\n## The worker's CPU time per step (ModelVersion.metrics cpu_ms: median ms over "
            "the measured labels)\n\n"
        )
        for r in cpu:
            steps = ", ".join(f"{k} {ms(median(v))}" for k, v in r.stored_cpu.items())
            text += f"- {r.size:,}: {steps}\n"
    if any(r.breakdown for r in results):
        text += (
            "\n## Where a run's CPU time goes (in-process `trainer.train`, ms of CPU)\n\n"
            f"{args.breakdown} label + `trainer.train` rounds in the benchmark process after the "
            "worker stopped: `cold` is the first (a fresh state rebuilt from the database), "
            "`warm` the median of the last five (the pool sample full by then; a step a run "
            "skips counts as 0). First the steps of `TrainingResult.cpu_ms` and the CPU time of "
            "`train()` in all (which also holds the work after the announcement); then inner "
            "functions timed by wrapping them, nested in those steps. CPU time of the "
            "benchmark's thread (`time.thread_time`), so other load on the machine hardly "
            "changes it.\n\n" + breakdown_table(results)
        )
    text += "\n## Targets\n\n" + "\n".join(f"- {t}" for t in targets(results)) + "\n"
    return text


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (`timeout`, a CI limit) unwinds like Ctrl-C: the worker and server subprocesses
    # are stopped and the scratch database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    idle = idle_percent()
    if idle is not None and idle < 80:
        print(f"warning: the CPUs are only {idle:.0f}% idle; latencies will be higher than usual")
    data_dir = tempfile.mkdtemp(prefix="retrain-bench-data-")
    if args.redis_note:
        print(f"warning: {args.redis_note}")
    env = base_env(args, secrets.token_urlsafe(48))
    env.update(DATA_DIR=data_dir, TRAINING_WORKER="external", REDIS_URL=args.layer_redis_url)
    django_setup(env)

    from annotations.demo import airline_tweets

    tweets = list(airline_tweets())
    random.Random(2015).shuffle(tweets)  # the file is grouped by airline
    texts = [t.text for t in tweets]
    truth = {t.text: t.label for t in tweets}
    _flush_redis(args.redis_url)
    results: list[SizeResult] = []
    with scratch_run(args, data_dir):
        for size in args.size_list:
            results.append(run_size(size, args, env, texts, truth))
        text = report(results, args, idle)  # it reads the server's version: before the drop
    write_report(text, args.output, started)
    return 0


@contextmanager
def scratch_run(args: argparse.Namespace, data_dir: str) -> Iterator[None]:
    """Whatever happens inside: close the connection, drop the scratch database (unless
    --keep-db), remove the run's data directory and flush the benchmark's Redis database."""
    from django.db import connection

    try:
        yield
    finally:
        connection.close()
        if not args.keep_db:
            drop_database(args.database_url)
        shutil.rmtree(data_dir, ignore_errors=True)
        _flush_redis(args.redis_url)


def write_report(text: str, output: str, started: float) -> None:
    """Print the report and write it to `output`."""
    print("\n" + text)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    sys.exit(main())

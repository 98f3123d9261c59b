#!/usr/bin/env python
"""Latency of "next item" and of a label submission, over HTTP, against the production ASGI
server on PostgreSQL, for projects of 10k, 100k and 1M text items.

Every request opens a fresh TCP connection and closes it afterwards (as a browser opening a
new connection or a script using one-shot requests would), so the numbers include the
connect and the whole Django request cycle: session, permission check, queue query, lease
write, template rendering. A submission is sent as the annotate page sends it (asking for the
next item in the same request), and a training worker runs beside the server (`--no-worker` to
leave it out), as in production; each process's memory is recorded after each size.

    python benchmarks/next_item.py                    # defaults: ~2 min (+15 s the first time)
    python benchmarks/next_item.py --sizes 100000 --server uvicorn,daphne \\
        --db-connections new,persistent,pool          # compare server set-ups

Items are bulk-loaded with COPY once and reused by later runs (their labels and leases are
reset); `--reload` loads them again. Only the script's own projects (bench-items-*) and users
(bench-annotator-*) are touched. Results go to stdout and benchmarks/results/next_item.md.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import processes  # noqa: E402  (needs ROOT on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable
PASSWORD = "bench-" + secrets.token_hex(8)
PROJECT_PREFIX = "bench-items-"
USER_PREFIX = "bench-annotator-"
CLASSES = ["positive", "negative", "neutral"]
# Each database set-up the server can run with: environment for the settings module.
DB_MODES = {
    "new": {"DB_CONN_MAX_AGE": "0", "DB_POOL": "0"},  # a new connection per request
    "persistent": {"DB_CONN_MAX_AGE": "60", "DB_POOL": "0"},  # Django's CONN_MAX_AGE
    "pool": {"DB_CONN_MAX_AGE": "0", "DB_POOL": "1"},  # psycopg_pool (Django >= 5.1)
}
SERVERS = ("uvicorn", "daphne")


# --------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/dataprep_bench",
        help="PostgreSQL database to use (created if missing)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="'' for in-memory")
    p.add_argument("--sizes", default="10000,100000,1000000", help="items per project")
    p.add_argument("--requests", type=int, default=300, help="measured requests of each kind")
    p.add_argument("--warmup", type=int, default=30, help="unmeasured requests before measuring")
    p.add_argument("--server", default="uvicorn", help="uvicorn, daphne or both (comma list)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    p.add_argument(
        "--db-connections",
        default="pool",
        help="comma list of: new (CONN_MAX_AGE=0), persistent (CONN_MAX_AGE=60), pool",
    )
    p.add_argument("--annotators", type=int, default=4, help="annotators taking turns")
    p.add_argument(
        "--concurrency",
        type=int,
        default=10,
        help="annotators working at once for the throughput table (0 to skip)",
    )
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="no training worker beside the server (production runs one; it needs Redis)",
    )
    p.add_argument("--reload", action="store_true", help="delete and bulk-load the items again")
    p.add_argument("--no-explain", action="store_true", help="skip EXPLAIN ANALYZE")
    p.add_argument(
        "--stress-rows",
        type=int,
        default=5000,
        help="leases/skips/answers added for the EXPLAIN degradation checks",
    )
    p.add_argument("--output", default=str(RESULTS / "next_item.md"))
    args = p.parse_args(argv)
    try:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes: {args.sizes!r} is not a comma list of item counts")
    if not args.size_list or min(args.size_list) < 1:
        p.error("--sizes: give at least one item count, each at least 1")
    args.server_list = [s.strip() for s in args.server.split(",") if s.strip()]
    args.db_list = [s.strip() for s in args.db_connections.split(",") if s.strip()]
    for s in args.server_list:
        if s not in SERVERS:
            p.error(f"--server: unknown server {s!r} (choose from {', '.join(SERVERS)})")
    for m in args.db_list:
        if m not in DB_MODES:
            p.error(f"--db-connections: unknown mode {m!r} (choose from {', '.join(DB_MODES)})")
    args.worker = not args.no_worker and bool(args.redis_url)
    if args.requests < 1 or args.annotators < 1:
        p.error("--requests and --annotators must be at least 1")
    return args


def base_env(args: argparse.Namespace, secret_key: str) -> dict[str, str]:
    """Production settings, except plain HTTP on 127.0.0.1 and uncollected static files."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="dataprep_site.settings",
        DATABASE_URL=args.database_url,
        DEBUG="0",
        SECRET_KEY=secret_key,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        STATIC_MANIFEST="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        # Every simulated annotator logs in and works flat out from 127.0.0.1: the abuse limits
        # (docs/security.md) stay in the path, with rates no benchmark reaches.
        LOGIN_RATE="100000/min",
        API_USER_RATE="100000/min",
    )
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    else:
        env.pop("REDIS_URL", None)
    return env


# --------------------------------------------------------------------------- database set-up


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit(f"--database-url {url!r} names no database")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def migrate(env: dict[str, str]) -> None:
    started = time.perf_counter()
    subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
    )
    print(f"migrated in {time.perf_counter() - started:.1f} s")


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def prepare_users(count: int) -> list[str]:
    """`count` annotator accounts sharing one password (hashed once: PBKDF2 is slow on purpose)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    user_model = get_user_model()
    hashed = make_password(PASSWORD)
    names = [f"{USER_PREFIX}{i}" for i in range(count)]
    for name in names:
        user_model.objects.update_or_create(username=name, defaults={"password": hashed})
    return names


def _tables():
    from annotations.models import (
        Annotation,
        AnnotationRevision,
        Item,
        ItemLease,
        LabelClass,
        Membership,
        Project,
    )

    return {
        m.__name__: m._meta.db_table
        for m in (Annotation, AnnotationRevision, Item, ItemLease, LabelClass, Membership, Project)
    }


def delete_project(pk: int) -> None:
    """Raw deletes: the ORM would load a million items to cascade."""
    from django.db import connection, transaction

    t = _tables()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"DELETE FROM {t['AnnotationRevision']} WHERE annotation_id IN "
            f"(SELECT id FROM {t['Annotation']} WHERE project_id = %s)",
            [pk],
        )
        for table in ("Annotation", "ItemLease", "Item", "LabelClass", "Membership"):
            cur.execute(f"DELETE FROM {t[table]} WHERE project_id = %s", [pk])
        cur.execute(f"DELETE FROM {t['Project']} WHERE id = %s", [pk])


def reset_project(pk: int) -> None:
    """Forget the labels and leases of an earlier run, so every run starts from a fresh queue."""
    from django.db import connection, transaction

    t = _tables()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"DELETE FROM {t['AnnotationRevision']} WHERE annotation_id IN "
            f"(SELECT id FROM {t['Annotation']} WHERE project_id = %s)",
            [pk],
        )
        cur.execute(f"DELETE FROM {t['Annotation']} WHERE project_id = %s", [pk])
        cur.execute(f"DELETE FROM {t['ItemLease']} WHERE project_id = %s", [pk])
        cur.execute(
            f"UPDATE {t['Item']} SET needs_annotation = true, annotation_count = 0 "
            "WHERE project_id = %s AND (NOT needs_annotation OR annotation_count <> 0)",
            [pk],
        )
        cur.execute(f"UPDATE {t['Project']} SET complete_count = 0 WHERE id = %s", [pk])


def settle_item_analyses(pk: int) -> None:
    """Record the analyses that read every item (duplicates, outliers) as run at today's item
    count, and forget every other run: a real project runs them once after its import, long
    before a team labels at full speed, so the measured window is labelling, not a first
    analysis of 1M items (what those cost: duplicates.py). The analyses that labels make due
    (predictions, label errors) run in the window as they would."""
    from django.utils import timezone

    from annotations.models import Project
    from curation.dataset_models import AnalysisRun

    AnalysisRun.objects.filter(project_id=pk).delete()
    count = Project.objects.get(pk=pk).item_count
    now = timezone.now()
    note = {"summary": "not run: benchmark set-up (benchmarks/next_item.py)"}
    AnalysisRun.objects.bulk_create(
        [
            AnalysisRun(
                project_id=pk,
                kind=kind,
                status=AnalysisRun.Status.DONE,
                started_at=now,
                finished_at=now,
                progress=1.0,
                basis=count,
                result=note,
            )
            for kind in (AnalysisRun.Kind.DUPLICATES, AnalysisRun.Kind.OUTLIERS)
        ]
    )


_WORDS = (  # noqa: SIM905 - a word list reads better as a sentence
    "the a service was very quite not really good bad slow fast friendly rude delivery "
    "product price support team order refund quality battery screen app update bug "
    "feature love hate expected arrived broken works perfectly never again recommend "
    "would okay fine customer experience waited hours minutes answer helpful useless "
    "great terrible value"
).split()


def _texts(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 30))) for _ in range(n)]


def load_items(project_pk: int, size: int) -> float:
    """COPY `size` text items into the project; returns seconds taken."""
    from django.db import connection, transaction

    from annotations.services import add_items_counted

    rng = random.Random(size)
    texts = _texts(997, rng)
    now = datetime.now(UTC).isoformat()
    table = _tables()["Item"]
    columns = (
        "project_id, external_id, text, image, image_format, metadata, priority, "
        "annotation_count, needs_annotation, created_at"
    )
    started = time.perf_counter()
    chunk = 20_000
    with transaction.atomic():
        connection.ensure_connection()
        raw = connection.connection  # the psycopg connection behind Django's
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for start in range(0, size, chunk):
                lines = [
                    f"{project_pk}\tdoc-{i:07d}\t{texts[i % 997]} #{i}\t\t\t{{}}\t"
                    f"{rng.random()!r}\t0\tt\t{now}\n"
                    for i in range(start, min(start + chunk, size))
                ]
                copy.write("".join(lines))
        from annotations.models import Project

        add_items_counted(Project.objects.get(pk=project_pk), size)
    return time.perf_counter() - started


def vacuum_analyze() -> None:
    from django.db import connection

    t = _tables()
    with connection.cursor() as cur:
        for name in ("Item", "ItemLease", "Annotation"):
            cur.execute(f"VACUUM ANALYZE {t[name]}")


def prepare_project(size: int, usernames: list[str], *, reload: bool) -> int:
    from django.contrib.auth import get_user_model

    from annotations.models import Membership, Project
    from annotations.services import project_create

    name = f"{PROJECT_PREFIX}{size}"
    existing = Project.objects.filter(name=name).first()
    if existing is not None and (reload or existing.item_count != size):
        delete_project(existing.pk)
        existing = None
    if existing is not None:
        reset_project(existing.pk)
        project = existing
        print(f"{name}: reusing {size:,} items (labels and leases reset)")
    else:
        project = project_create(
            name=name,
            classes=CLASSES,
            instructions="Is the review positive, negative or neutral?",
        )
        seconds = load_items(project.pk, size)
        print(f"{name}: loaded {size:,} items with COPY in {seconds:.1f} s")
    settle_item_analyses(project.pk)
    users = get_user_model().objects.filter(username__in=usernames)
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.ANNOTATOR) for u in users],
        ignore_conflicts=True,
    )
    return project.pk


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(kind: str, workers: int, env: dict[str, str], pids: list[int] | None = None):
    """Start the ASGI server in its own process group; yields its port; stops it. The server's
    (master) process id is appended to `pids` when given."""
    port = free_port()
    app = "dataprep_site.asgi:application"
    if kind == "uvicorn":
        cmd = [
            PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--lifespan", "off", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        cmd = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", app]
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
        "w+", prefix=f"bench-{kind}-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    if pids is not None:
        pids.append(proc.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"{kind} exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                status, _, _ = request(port, "GET", "/accounts/login/")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind} did not answer on port {port} within 60 s")
            time.sleep(0.2)
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        os.unlink(log.name)


# --------------------------------------------------------------------------- HTTP client


def request(
    port: int, method: str, path: str, body: str | None = None, headers: dict | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a new connection, closed afterwards."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@dataclass
class Annotator:
    username: str
    cookies: dict[str, str] = field(default_factory=dict)

    def take_cookies(self, headers: http.client.HTTPMessage) -> None:
        for raw in headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(raw)
            for key, morsel in jar.items():
                self.cookies[key] = morsel.value

    def headers(self, **extra: str) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Cookie": cookie, **extra}


_CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
_ITEM_ID = re.compile(rb'<article class="card" data-item-id="(\d+)"')  # a card, not the history


def login(port: int, username: str) -> Annotator:
    """Log in through the login form, as a browser does: CSRF cookie first, then the POST."""
    who = Annotator(username)
    status, headers, body = request(port, "GET", "/accounts/login/")
    who.take_cookies(headers)
    match = _CSRF_INPUT.search(body)
    if status != 200 or match is None:
        raise SystemExit(f"GET /accounts/login/ gave HTTP {status} without a CSRF token")
    form = urlencode(
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": match.group(1)}
    )
    status, headers, _ = request(
        port,
        "POST",
        "/accounts/login/",
        form,
        who.headers(**{"Content-Type": "application/x-www-form-urlencoded"}),
    )
    who.take_cookies(headers)
    if status != 302 or "sessionid" not in who.cookies:
        raise SystemExit(f"logging in as {username} failed: HTTP {status}")
    return who


def next_item(port: int, project_pk: int, who: Annotator) -> tuple[float, int]:
    """GET the next card; returns (seconds, item id)."""
    started = time.perf_counter()
    status, _, body = request(
        port,
        "GET",
        f"/projects/{project_pk}/annotate/next/?count=1",
        headers=who.headers(**{"HX-Request": "true"}),
    )
    elapsed = time.perf_counter() - started
    match = _ITEM_ID.search(body)
    if status != 200 or match is None:
        raise SystemExit(f"next item for {who.username}: HTTP {status}, no item\n{body[:500]!r}")
    return elapsed, int(match.group(1))


def submit(
    port: int, project_pk: int, who: Annotator, item_id: int, label: str, *, want: int = 1
) -> tuple[float, int | None]:
    """POST an answer as the annotate page does (static/js/annotate.js): `want` new items to
    hold, so the response carries the next card; returns (seconds, that card's item id)."""
    form = urlencode(
        {
            "item": item_id,
            "labels": label,
            "skipped": "",
            "client_uuid": str(uuid.uuid4()),
            "time_spent_ms": 1500,
            "want": want,
            "exclude": "",
        }
    )
    headers = who.headers(
        **{
            "Content-Type": "application/x-www-form-urlencoded",
            "X-CSRFToken": who.cookies["csrftoken"],
            "HX-Request": "true",
        }
    )
    started = time.perf_counter()
    status, _, body = request(
        port, "POST", f"/projects/{project_pk}/annotate/submit/", form, headers
    )
    elapsed = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"submit of item {item_id}: HTTP {status}\n{body[:500]!r}")
    match = _ITEM_ID.search(body)
    if want and match is None:
        raise SystemExit(f"submit of item {item_id} with want={want}: no next card")
    return elapsed, int(match.group(1)) if match else None


def label_round(
    port: int, project_pk: int, who: Annotator, turn: int
) -> tuple[float, float, float]:
    """One round of the page's protocol: the next item (the page's refill, a fresh lease), its
    answer asking for one more item (the page's usual submission, `want=1`), then the answer to
    that one with a full queue (`want=0`), which leaves the page holding nothing, as at the
    start of the round. Returns the three latencies in seconds."""
    t_next, item_id = next_item(port, project_pk, who)
    t_submit, held = submit(port, project_pk, who, item_id, CLASSES[turn % 3], want=1)
    t_full, _ = submit(port, project_pk, who, held, CLASSES[(turn + 1) % 3], want=0)
    return t_next, t_submit, t_full


def api_next(port: int, project_pk: int, who: Annotator) -> tuple[float, int | None, int]:
    """The JSON API's next item, if the API has one: (seconds, item id or None, status)."""
    started = time.perf_counter()
    status, _, body = request(
        port,
        "GET",
        f"/api/projects/{project_pk}/next/",
        headers=who.headers(Accept="application/json"),
    )
    elapsed = time.perf_counter() - started
    item_id = None
    if status == 200:
        import json

        data = json.loads(body)
        item_id = _first_item_id(data)
    return elapsed, item_id, status


def _first_item_id(data) -> int | None:
    if isinstance(data, list):
        return _first_item_id(data[0]) if data else None
    if isinstance(data, dict):
        for key in ("results", "items", "item"):
            if key in data:
                return _first_item_id(data[key])
        value = data.get("id")
        return int(value) if isinstance(value, int) else None
    return None


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    size: int
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)  # want=1, as the page sends it
    submit_full_ms: list[float] = field(default_factory=list)  # want=0: the page's queue is full
    api_next_ms: list[float] = field(default_factory=list)
    memory: list[tuple[str, int, float]] = field(default_factory=list)  # (role, pid, RSS MiB)


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[94], q[98]


def measure_sequential(
    port: int, project_pk: int, annotators: list[Annotator], warmup: int, n: int
) -> Run:
    """Annotators take turns at `label_round`. One request in flight at a time."""
    run = Run(size=0)
    for i in range(warmup + n):
        t_next, t_submit, t_full = label_round(port, project_pk, annotators[i % len(annotators)], i)
        if i >= warmup:
            run.next_ms.append(t_next * 1000)
            run.submit_ms.append(t_submit * 1000)
            run.submit_full_ms.append(t_full * 1000)
    return run


def measure_api(
    port: int, project_pk: int, annotators: list[Annotator], warmup: int, n: int
) -> list[float] | None:
    """API next item then a submission of it, if the API route exists (else None)."""
    _, item_id, status = api_next(port, project_pk, annotators[0])
    if status == 404:
        return None
    if status != 200 or item_id is None:
        print(f"  API next: HTTP {status}, no item id understood; skipped")
        return None
    submit(port, project_pk, annotators[0], item_id, CLASSES[0], want=0)
    out: list[float] = []
    for i in range(warmup + n):
        who = annotators[i % len(annotators)]
        elapsed, item_id, status = api_next(port, project_pk, who)
        if status != 200 or item_id is None:
            raise SystemExit(f"API next for {who.username}: HTTP {status}")
        submit(port, project_pk, who, item_id, CLASSES[i % 3], want=0)
        if i >= warmup:
            out.append(elapsed * 1000)
    return out


@dataclass
class Concurrent:
    size: int
    annotators: int
    seconds: float
    submissions: int
    next_ms: list[float]
    submit_ms: list[float]


def measure_concurrent(
    port: int, project_pk: int, annotators: list[Annotator], warmup: int, n: int, size: int
) -> Concurrent:
    """Every annotator labels in its own thread, as fast as the server answers."""
    per = max(1, n // len(annotators))
    next_ms: list[float] = []
    submit_ms: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(annotators) + 1)

    def work(who: Annotator, index: int) -> None:
        try:
            for i in range(max(1, warmup // len(annotators))):
                label_round(port, project_pk, who, i)
            barrier.wait()
            mine_next, mine_submit = [], []
            for i in range(max(1, per // 2)):  # two answers a round
                t_next, t_submit, t_full = label_round(port, project_pk, who, i + index)
                mine_next.append(t_next * 1000)
                mine_submit += [t_submit * 1000, t_full * 1000]
            with lock:
                next_ms.extend(mine_next)
                submit_ms.extend(mine_submit)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=work, args=(who, i), daemon=True)
        for i, who in enumerate(annotators)
    ]
    for t in threads:
        t.start()
    with suppress(threading.BrokenBarrierError):
        barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(annotators)} annotators at once: {errors[0]}")
    return Concurrent(size, len(annotators), seconds, len(submit_ms), next_ms, submit_ms)


# --------------------------------------------------------------------------- EXPLAIN


def explain_queue(project_pk: int, usernames: list[str], stress_rows: int) -> str:
    """EXPLAIN ANALYZE of the SQL the app really sends (captured from `next_items` and
    `queue_status`) on a fresh queue, then with `stress_rows` live leases held by another
    annotator, items skipped by this one and answers given by this one at the head of the queue.
    Everything added is rolled back."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from annotations import queue
    from annotations.models import ItemLease, Project

    t = _tables()
    users = get_user_model().objects.filter(username__in=usernames).order_by("username")
    me, other = users[0], users[1]
    project = Project.objects.get(pk=project_pk)
    out: list[str] = []

    def captured(call, marker: str) -> str:
        with CaptureQueriesContext(connection) as queries:
            call()
        return next(q["sql"] for q in queries.captured_queries if marker in q["sql"])

    def explain(sql: str) -> list[str]:
        with connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            return [r[0] for r in cur.fetchall()]

    def plan(title: str, *, full: bool = False) -> None:
        ItemLease.objects.filter(project=project, user=me).delete()  # so a fresh walk runs
        walk = explain(
            captured(lambda: queue.next_items(project=project, user=me, count=1), "SKIP LOCKED")
        )
        count = explain(captured(lambda: queue.queue_status(project=project, user=me), "COUNT"))
        took = next(x.strip() for x in walk if "Execution Time" in x)
        index = next((x.strip(" ->") for x in walk if "item_queue_idx" in x), "no index walk!")
        out.append(f"#### {title}\n\nnext-item candidates: {took}; {index}\n")
        if full:
            out.append("```\n" + "\n".join(walk) + "\n```\n")
        counted = next((x.strip(" ->") for x in count if "Scan" in x), "")
        took = next(x.strip() for x in count if "Execution Time" in x)
        out.append(f"progress count (answers by me, every submission): {took}; {counted}\n")

    top = (
        f"SELECT id FROM {t['Item']} WHERE project_id = %s AND needs_annotation "
        "ORDER BY priority DESC, id LIMIT %s"
    )
    with transaction.atomic():
        plan("fresh queue, overlap 1", full=True)
        project.overlap = 2  # only changes the SQL the queue writes
        plan("fresh queue, overlap 2", full=True)
        project.overlap = 1
        with connection.cursor() as cur:
            cur.execute(
                f"INSERT INTO {t['ItemLease']} "
                "(project_id, item_id, user_id, created_at, expires_at)"
                f" SELECT %s, id, %s, now(), now() + interval '1 hour' FROM ({top}) AS top",
                [project_pk, other.pk, project_pk, stress_rows],
            )
        plan(f"{stress_rows:,} live leases held by another annotator at the head of the queue")
        with connection.cursor() as cur:
            cur.execute(
                f"INSERT INTO {t['Annotation']} (project_id, item_id, annotator_id, labels, "
                "skipped, time_spent_ms, client_uuid, created_at, updated_at) "
                "SELECT %s, id, %s, '[]', true, 0, gen_random_uuid(), now(), now() "
                f"FROM ({top} OFFSET %s) AS top",
                [project_pk, me.pk, project_pk, stress_rows, stress_rows],
            )
        plan(f"… and {stress_rows:,} items skipped by this annotator right after them")
        with connection.cursor() as cur:
            cur.execute(
                f"INSERT INTO {t['Annotation']} (project_id, item_id, annotator_id, labels, "
                "skipped, time_spent_ms, client_uuid, created_at, updated_at) "
                "SELECT %s, id, %s, '[\"positive\"]', false, 0, gen_random_uuid(), now(), now() "
                f"FROM {t['Item']} WHERE project_id = %s AND needs_annotation "
                "ORDER BY priority ASC, id LIMIT %s",
                [project_pk, me.pk, project_pk, stress_rows * 10],
            )
        plan(
            f"… and {stress_rows * 10:,} answers by this annotator at the end of the queue "
            "(a productive annotator)"
        )
        project.overlap = 2
        plan("the same rows with overlap 2 (a lease by one other annotator leaves a slot free)")
        transaction.set_rollback(True)
    return "\n".join(out)


# --------------------------------------------------------------------------- report


def ms(v: float) -> str:
    return f"{v:.1f}"


def latency_table(runs: list[Run]) -> str:
    head = (
        "| items | next p50 | next p95 | next p99 | submit p50 | submit p95 | submit p99 |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for r in runs:
        n50, n95, n99 = percentiles(r.next_ms)
        s50, s95, s99 = percentiles(r.submit_ms)
        cells = [f"{r.size:,}", *(ms(v) for v in (n50, n95, n99, s50, s95, s99))]
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def api_table(runs: list[Run]) -> str:
    rows = [r for r in runs if r.api_next_ms]
    if not rows:
        return ""
    out = "| items | API next p50 | p95 | p99 |\n|---:|---:|---:|---:|\n"
    for r in rows:
        a50, a95, a99 = percentiles(r.api_next_ms)
        out += f"| {r.size:,} | {ms(a50)} | {ms(a95)} | {ms(a99)} |\n"
    return out


def concurrent_table(runs: list[Concurrent]) -> str:
    if not runs:
        return ""
    out = (
        "| items | annotators | annotations/s | next p50 | next p95 | submit p50 | submit p95 |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for c in runs:
        n50, n95, _ = percentiles(c.next_ms)
        s50, s95, _ = percentiles(c.submit_ms)
        out += (
            f"| {c.size:,} | {c.annotators} | {c.submissions / c.seconds:.0f} | {ms(n50)} | "
            f"{ms(n95)} | {ms(s50)} | {ms(s95)} |\n"
        )
    return out


def targets(runs: list[Run]) -> list[str]:
    """The issue's targets, checked: next p99 <= 15 ms at 100k, <= 25 ms at 1M; submit p99
    <= 20 ms at any size."""
    notes = []
    for r in runs:
        _, _, n99 = percentiles(r.next_ms)
        _, _, s99 = percentiles(r.submit_ms)
        limit = 15.0 if r.size <= 100_000 else 25.0
        if r.size >= 100_000:
            notes.append(f"next p99 at {r.size:,}: {n99:.1f} ms (target ≤ {limit:.0f}) "
                         f"{'OK' if n99 <= limit else 'MISSED'}")  # fmt: skip
        notes.append(f"submit p99 at {r.size:,}: {s99:.1f} ms (target ≤ 20) "
                     f"{'OK' if s99 <= 20 else 'MISSED'}")  # fmt: skip
    return notes


def idle_percent(seconds: float = 2.0) -> float | None:
    """How idle the CPUs were over the next `seconds` (Linux), before we add any load: other
    work on a 2-core machine shows straight up in the tail latencies."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def machine_info(args: argparse.Namespace, idle: str) -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import django

    return (
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; "
        f"CPUs {idle}% idle just before the run\n"
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"PostgreSQL {pg}, channel layer: {'Redis' if args.redis_url else 'in-memory'}\n"
        f"- {args.requests} measured requests of each kind after {args.warmup} warm-up "
        f"requests, {args.annotators} annotators taking turns, one request in flight, "
        "a new TCP connection per request; submissions as the page sends them (`want=1`)\n"
        f"- training worker: {'running (manage.py trainworker)' if args.worker else 'none'}\n"
        f"- commit: {commit()}\n"
    )


def commit() -> str:
    """The checkout measured (`-dirty` when it has uncommitted changes)."""
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return described.stdout.strip() or "unknown"


@dataclass
class Setup:
    server: str
    workers: int
    db: str
    runs: list[Run] = field(default_factory=list)
    concurrent: list[Concurrent] = field(default_factory=list)
    error: str = ""  # why the set-up could not finish, if it could not
    worker_peak_mib: float | None = None  # the training worker's VmHWM at the end

    @property
    def label(self) -> str:
        procs = f"{self.workers} worker processes" if self.server == "uvicorn" else "1 process"
        return f"{self.server} ({procs}), DB connections: {self.db}"


def run_setup(setup: Setup, args, env, usernames: list[str], projects: dict[int, int]) -> None:
    """Measure one set-up; a failure (say, HTTP 500s) is recorded and the next set-up runs."""
    print(f"\n== {setup.label}")
    try:
        _measure_setup(setup, args, env, usernames, projects)
    except SystemExit as exc:
        setup.error = str(exc).splitlines()[0]
        print(f"  FAILED: {setup.error}")
    if setup.runs:
        print("\n" + latency_table(setup.runs))
        print("\n".join(targets(setup.runs)))


def _measure_setup(setup: Setup, args, env, usernames: list[str], projects: dict[int, int]) -> None:
    pids: list[int] = []
    worker = processes.start_training_worker(env) if args.worker else None
    try:
        with running_server(
            setup.server, setup.workers, {**env, **DB_MODES[setup.db]}, pids
        ) as port:
            annotators = [login(port, u) for u in usernames]
            for size, pk in projects.items():
                _measure_size(setup, args, port, annotators, size, pk, pids[0], worker)
    finally:
        if worker is not None:
            setup.worker_peak_mib = worker.peak_rss_mib()
            worker.stop()


def _measure_size(setup: Setup, args, port, annotators, size, pk, server_pid, worker) -> None:
    run = measure_sequential(port, pk, annotators[: args.annotators], args.warmup, args.requests)
    run.size = size
    run.api_next_ms = (
        measure_api(port, pk, annotators[: args.annotators], args.warmup, args.requests) or []
    )
    setup.runs.append(run)
    n50, _, n99 = percentiles(run.next_ms)
    s50, _, s99 = percentiles(run.submit_ms)
    print(
        f"  {size:>9,} items: next p50 {n50:.1f} p99 {n99:.1f} ms, "
        f"submit p50 {s50:.1f} p99 {s99:.1f} ms"
    )
    if args.concurrency:
        c = measure_concurrent(
            port, pk, annotators[: args.concurrency], args.warmup, args.requests, size
        )
        setup.concurrent.append(c)
        print(
            f"  {size:>9,} items, {c.annotators} annotators at once: "
            f"{c.submissions / c.seconds:.0f} annotations/s"
        )
    # Memory once this size has been served (each process keeps what it loaded).
    run.memory = processes.server_memory(server_pid)
    if worker is not None and (rss := worker.rss_mib()) is not None:
        run.memory.append(("training worker", worker.proc.pid, rss))
    print("  RSS: " + ", ".join(f"{role} {mib:.0f} MiB" for role, _, mib in run.memory))


def memory_table(runs: list[Run]) -> str:
    """RSS of each process after each size was served: the server's master, its helper and
    workers, and the training worker."""
    rows = [r for r in runs if r.memory]
    if not rows:
        return ""
    out = "| items | " + " | ".join(role for role, _, _ in rows[0].memory) + " |\n"
    out += "|---:|" + "---:|" * len(rows[0].memory) + "\n"
    for r in rows:
        out += f"| {r.size:,} | " + " | ".join(f"{mib:.0f}" for _, _, mib in r.memory) + " |\n"
    return out


def setup_section(setup: Setup, args) -> str:
    out = f"### {setup.label}\n\n"
    if setup.error:
        out += f"**Failed:** {setup.error}\n\n"
    if not setup.runs:
        return out
    out += f"Sequential latency (ms):\n\n{latency_table(setup.runs)}\n"
    if api_table(setup.runs):
        out += f"JSON API `GET /api/projects/<pk>/next/` (ms):\n\n{api_table(setup.runs)}\n"
    if memory_table(setup.runs):
        peak = setup.worker_peak_mib
        out += (
            "Resident memory (MiB, VmRSS) of each process once the size was served"
            + (f"; training worker peak (VmHWM) {peak:.0f} MiB" if peak else "")
            + f":\n\n{memory_table(setup.runs)}\n"
        )
    if setup.concurrent:
        out += (
            f"{args.concurrency} annotators at once (each: next, then submit, in a loop):\n\n"
            f"{concurrent_table(setup.concurrent)}\n"
        )
    return out + "Targets: " + "; ".join(targets(setup.runs)) + "\n"


def comparison_table(setups: list[Setup]) -> str:
    """One row per server set-up and size: the p50/p99 pairs side by side."""
    out = (
        "| set-up | items | next p50 | next p99 | submit p50 | submit p99 |\n"
        "|---|---:|---:|---:|---:|---:|\n"
    )
    for setup in setups:
        for r in setup.runs:
            n50, _, n99 = percentiles(r.next_ms)
            s50, _, s99 = percentiles(r.submit_ms)
            out += (
                f"| {setup.label} | {r.size:,} | {ms(n50)} | {ms(n99)} | {ms(s50)} | {ms(s99)} |\n"
            )
        if setup.error:
            out += f"| {setup.label} | | failed: {setup.error[:80]} | | | |\n"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    idle = idle_percent()
    if idle is not None and idle < 80:
        print(f"warning: the CPUs are only {idle:.0f}% idle; latencies will be higher than usual")
    env = base_env(args, secrets.token_urlsafe(48))
    ensure_database(args.database_url)
    migrate(env)
    django_setup(env)
    from django.db import connection

    usernames = prepare_users(max(args.annotators, args.concurrency, 2))
    projects = {
        size: prepare_project(size, usernames, reload=args.reload) for size in args.size_list
    }
    vacuum_analyze()
    connection.close()

    setups = [
        Setup(server, args.workers if server == "uvicorn" else 1, db)
        for server in args.server_list
        for db in args.db_list
    ]
    for setup in setups:
        run_setup(setup, args, env, usernames, projects)

    explain = ""
    if not args.no_explain:
        largest = max(projects)
        print(f"\nEXPLAIN ANALYZE at {largest:,} items …")
        explain = explain_queue(projects[largest], usernames, args.stress_rows)
        print(explain)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Next item and submission latency\n\n"
        "Written by `benchmarks/next_item.py`; see `benchmarks/README.md`.\n\n"
        + machine_info(args, "unknown" if idle is None else f"{idle:.0f}")
        + "\n"
    )
    if len(setups) > 1:
        text += f"## Set-ups compared\n\n{comparison_table(setups)}\n"
    text += "## Results\n\n" + "\n".join(setup_section(s, args) for s in setups)
    if explain:
        text += f"\n## EXPLAIN ANALYZE at {max(projects):,} items\n\n{explain}\n"
    output.write_text(text)
    print(f"\nwrote {output} ({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

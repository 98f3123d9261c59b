#!/usr/bin/env python
"""Server-side cost of the annotate page's requests, in-process: queries and CPU per request.

Runs the annotate page's protocol through Django's test client (the whole middleware chain,
the views, the templates, the real PostgreSQL and Redis) on the projects `next_item.py`
loads, and reports per request kind the SQL statements sent and the CPU time of this process.
Unlike wall-clock latencies these figures hardly move when other work shares the machine, so
they are what to compare before and after a change. `--profile` adds cProfile's top functions.

    python benchmarks/profile_requests.py --size 100000 --rounds 200
    python benchmarks/profile_requests.py --size 100000 --rounds 200 --profile submit
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import re
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from asgiref.sync import sync_to_async

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import next_item as bench  # noqa: E402 - after the path is set

_ITEM_ID = re.compile(rb'<article class="card" data-item-id="(\d+)"')  # not the history's
KINDS = ("next", "submit", "submit_full")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_bench")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="'' for in-memory")
    p.add_argument("--size", type=int, default=100_000, help="items in the project")
    p.add_argument("--rounds", type=int, default=200, help="measured rounds")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--profile", choices=KINDS, help="cProfile this request kind")
    p.add_argument("--top", type=int, default=35, help="functions shown by --profile")
    p.add_argument("--queries", action="store_true", help="print the SQL of one round")
    return p.parse_args(argv)


class Page:
    """One annotator's page: the items it holds, and the page's three requests.

    Each request runs through Django's test client in a worker thread while an event loop runs
    in the main one, as a sync view runs under uvicorn: the channel layer's sends hop to that
    loop and reuse its Redis connections, as in production. `profiler` profiles the requests
    it is enabled for, in the thread that runs them."""

    def __init__(self, client, project_pk: int) -> None:
        self.client = client
        self.base = f"/projects/{project_pk}/annotate"
        self.held: list[int] = []
        self.profiler: cProfile.Profile | None = None

    def _call(self, method: str, path: str, data: dict):
        if self.profiler:
            self.profiler.enable()
        try:
            return getattr(self.client, method)(path, data, headers={"HX-Request": "true"})
        finally:
            if self.profiler:
                self.profiler.disable()

    async def _send(self, method: str, path: str, data: dict):
        resp = await sync_to_async(self._call)(method, path, data)
        if resp.status_code != 200:
            raise SystemExit(f"HTTP {resp.status_code}: {resp.content[:500]!r}")
        return resp

    async def next(self) -> None:
        exclude = ",".join(map(str, self.held))
        resp = await self._send("get", f"{self.base}/next/", {"count": 1, "exclude": exclude})
        self._take(resp)

    async def submit(self, want: int) -> None:
        item, rest = self.held[0], self.held[1:]
        data = {
            "item": item,
            "labels": bench.CLASSES[item % 3],
            "client_uuid": str(uuid.uuid4()),
            "time_spent_ms": 1500,
            "want": want,
            "exclude": ",".join(map(str, rest)),
        }
        resp = await self._send("post", f"{self.base}/submit/", data)
        self.held = rest
        self._take(resp)

    def _take(self, resp) -> None:
        self.held += [int(x) for x in _ITEM_ID.findall(resp.content) if int(x) not in self.held]


def round_of(page: Page) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """The benchmark's round: the page's refill, a submission asking for the next item (as the
    page sends it), and one with a full queue (want=0) that keeps the page at one held item."""
    return [("next", page.next), ("submit", lambda: page.submit(1)),
            ("submit_full", lambda: page.submit(0))]  # fmt: skip


class QueryCounter:
    """Counts the SQL statements of every connection, whichever thread runs the view (under
    ASGI a sync view runs in a worker thread, out of reach of `CaptureQueriesContext`)."""

    def __init__(self) -> None:
        self.count = 0
        self.sql: list[str] = []
        self.keep = False

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        if self.keep:
            self.sql.append(sql)
        return execute(sql, params, many, context)

    def install(self, sender, connection, **kwargs) -> None:
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ns = argparse.Namespace(redis_url=args.redis_url, database_url=args.database_url)
    env = {**bench.base_env(ns, secrets.token_urlsafe(48)), **bench.DB_MODES["pool"]}
    bench.ensure_database(args.database_url)
    bench.migrate(env)
    bench.django_setup(env)
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db.backends.signals import connection_created
    from django.test import Client

    settings.ALLOWED_HOSTS = ["testserver", *settings.ALLOWED_HOSTS]
    # Before any connection opens: the test clients keep a thread's connection between requests.
    counter = QueryCounter()
    connection_created.connect(counter.install, weak=False)

    def prepare():
        usernames = bench.prepare_users(2)
        pk = bench.prepare_project(args.size, usernames, reload=False)
        bench.vacuum_analyze()
        return get_user_model().objects.get(username=usernames[0]), pk

    user, pk = await sync_to_async(prepare)()
    client = Client()
    await sync_to_async(client.force_login)(user)
    page = Page(client, pk)
    for _ in range(args.warmup):
        for _, call in round_of(page):
            await call()

    counts: dict[str, Counter] = {k: Counter() for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    wall: dict[str, list[float]] = {k: [] for k in KINDS}
    # Thread CPU time, not wall time: what the request costs, without its waits for the database.
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    for index in range(args.rounds):
        for kind, call in round_of(page):
            counter.count, counter.sql, counter.keep = 0, [], args.queries and index == 0
            page.profiler = profiler if kind == args.profile else None
            c0, w0 = time.process_time(), time.perf_counter()
            await call()
            c1, w1 = time.process_time(), time.perf_counter()
            cpu[kind].append((c1 - c0) * 1000)
            wall[kind].append((w1 - w0) * 1000)
            counts[kind][counter.count] += 1
            if counter.keep:
                print(f"--- {kind}: {counter.count} statements")
                for sql in counter.sql:
                    print("   ", sql[:160])

    note = f", cProfile on {args.profile}" if profiler else ""
    print(f"\n{args.size:,} items, {args.rounds} rounds (CPU: this process, all threads{note})\n")
    print("| request | SQL statements | CPU p50 ms | CPU mean ms | wall p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for kind in KINDS:
        q = ", ".join(f"{n}" for n, _ in counts[kind].most_common())
        print(
            f"| {kind} | {q} | {statistics.median(cpu[kind]):.2f} | "
            f"{statistics.fmean(cpu[kind]):.2f} | {statistics.median(wall[kind]):.2f} |"
        )
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""A team labelling at once: 50 annotators (distinct accounts) work through the annotate page's
own protocol against the production set-up (uvicorn with 2 worker processes, one
`manage.py trainworker`, PostgreSQL, Redis), at 100k and 1M items.

Each simulated annotator does what static/js/annotate.js does: it fills its queue with
`GET /projects/<pk>/annotate/next/?count=2` (the page holds the current card and one ahead),
then answers the current card with `POST /projects/<pk>/annotate/submit/` carrying `want` (how
many cards the queue needs) and `exclude` (the cards it holds), and the response brings the next
card. Like a browser, each annotator keeps its HTTP connections alive (its own aiohttp session,
at most 2 connections, cookies of its own login). One asyncio process runs all 50; its CPU time
is measured and reported, so a client that became the bottleneck would show.

    python benchmarks/load.py                                  # 100k and 1M, ~6 min
    python benchmarks/load.py --sizes 100000 --duration 10     # a quick look

`--rate` is the team's pace in labels/s (each annotator waits between labels so that the team
offers that rate; 0 = everyone flat out, which measures capacity). Latencies are measured over a
fixed window after a warm-up. At the end the database is checked: every acknowledged answer
(HTTP 200, with its client UUID) is stored exactly once, no item has more answers than the
project's overlap, and at overlap 1 no item was handed to two annotators (from the responses).
Writes benchmarks/results/load.md. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import next_item as nb  # noqa: E402 - after the path fix above
from benchmarks.processes import (  # noqa: E402
    PG,
    WORKER_EVENTS,
    running_trainworker,
    server_processes,
    snapshot,
    spy,
    uvicorn_pid,
)

ROOT = nb.ROOT
RESULTS = nb.RESULTS
QUEUE_TARGET = 2  # 1 + PREFETCH_ITEMS: the current card and one fetched ahead, as the page
_CARD = re.compile(rb'<article class="card" data-item-id="(\d+)"')


# --------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_bench_load"
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--sizes", default="100000,1000000", help="items per project")
    p.add_argument("--annotators", type=int, default=50)
    p.add_argument("--rate", type=float, default=150, help="labels/s offered; 0 = flat out")
    p.add_argument("--warmup", type=float, default=10, help="seconds before the window")
    p.add_argument("--duration", type=float, default=30, help="seconds measured")
    p.add_argument(
        "--reopen-every",
        type=int,
        default=20,
        help="every N labels an annotator's cards are dropped and fetched again with "
        "next?count=2, the page's own refill (as after a reload); 0 = never: every card then "
        "comes with a submission",
    )
    p.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    p.add_argument("--overlap", type=int, default=1, help="answers wanted per item")
    p.add_argument("--no-trainworker", action="store_true", help="run without training worker")
    p.add_argument("--reload", action="store_true", help="delete and bulk-load the items again")
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        default="",
        help="record each server process and the worker with py-spy over the window (raw "
        "collapsed stacks, one file per process, into DIR); `--py-spy-gil` samples only the "
        "thread holding the GIL (CPU, not waits)",
    )
    p.add_argument("--py-spy-gil", action="store_true")
    p.add_argument("--output", default=str(RESULTS / "load.md"))
    args = p.parse_args(argv)
    try:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes: {args.sizes!r} is not a comma list of item counts")
    if not args.size_list or args.annotators < 1 or args.duration <= 0 or args.rate < 0:
        p.error("give at least one size, one annotator, a positive --duration, --rate >= 0")
    return args


#: Seconds between two readings of the processes' memory in the window.
TRACE_SECONDS = 5.0

# --------------------------------------------------------------------------- the simulated page


@dataclass
class Stats:
    """What every annotator saw; shared by all (one event loop, no locks needed)."""

    window: tuple[float, float] = (0.0, 0.0)  # perf_counter start, end of the measured window
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    labels_in_window: int = 0
    statuses: Counter = field(default_factory=Counter)  # (kind, status) -> count
    acknowledged: dict[str, tuple[int, str]] = field(default_factory=dict)  # uuid -> item, user
    served: dict[int, set[str]] = field(default_factory=dict)  # item -> annotators given it
    empty_queue: int = 0  # responses that said "nothing left for you"
    # name -> (CPU seconds, RSS bytes) of each server process at the window's start and end
    before: dict[str, tuple[float, int]] = field(default_factory=dict)
    after: dict[str, tuple[float, int]] = field(default_factory=dict)
    client_errors: list[str] = field(default_factory=list)
    # every TRACE_SECONDS of the window: (seconds into it, labels so far, {name: RSS bytes})
    trace: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)

    def in_window(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]


class PageClient:
    """One annotator's browser tab on the annotate page, kept-alive connections included."""

    def __init__(self, session, base: str, project_pk: int, who: nb.Annotator, stats: Stats):
        self.session = session
        self.base = base
        self.pk = project_pk
        self.who = who
        self.stats = stats
        self.queue: list[int] = []

    def _take(self, body: bytes) -> None:
        for match in _CARD.finditer(body):
            item = int(match.group(1))
            if item not in self.queue:
                self.queue.append(item)
            self.stats.served.setdefault(item, set()).add(self.who.username)
        if b'data-empty="true"' in body:
            self.stats.empty_queue += 1

    async def refill(self) -> None:
        want = max(1, QUEUE_TARGET - len(self.queue))
        exclude = ",".join(map(str, self.queue))
        url = f"{self.base}/projects/{self.pk}/annotate/next/?count={want}&exclude={exclude}"
        started = time.perf_counter()
        async with self.session.get(url, headers={"HX-Request": "true"}) as resp:
            body = await resp.read()
            status = resp.status
        done = time.perf_counter()
        self.stats.statuses[("next", status)] += 1
        if self.stats.in_window(started):
            self.stats.next_ms.append((done - started) * 1000)
        if status == 200:
            self._take(body)

    async def answer(self, label: str) -> None:
        """Answer the current card; the response refills the queue (`want`)."""
        item = self.queue.pop(0)
        client_uuid = str(uuid.uuid4())
        form = {
            "item": str(item),
            "labels": label,
            "skipped": "",
            "time_spent_ms": "1500",
            "client_uuid": client_uuid,
            "exclude": ",".join(map(str, self.queue)),
            "want": str(max(0, QUEUE_TARGET - len(self.queue))),
        }
        headers = {"X-CSRFToken": self.who.cookies["csrftoken"], "HX-Request": "true"}
        started = time.perf_counter()
        async with self.session.post(
            f"{self.base}/projects/{self.pk}/annotate/submit/", data=form, headers=headers
        ) as resp:
            body = await resp.read()
            status = resp.status
        done = time.perf_counter()
        self.stats.statuses[("submit", status)] += 1
        if self.stats.in_window(started):
            self.stats.submit_ms.append((done - started) * 1000)
        if status == 200:
            self.stats.acknowledged[client_uuid] = (item, self.who.username)
            if self.stats.in_window(done):
                self.stats.labels_in_window += 1
            self._take(body)


async def annotator_loop(
    page: PageClient, interval: float, stop_at: float, seed: int, reopen_every: int
) -> None:
    """Label until `stop_at`: think, answer, repeat; each label is due `interval` s after the
    previous one (a little jitter), or at once when the server was slower than that. Every
    `reopen_every` labels the page is opened again: its cards are dropped and fetched anew
    (the server hands the annotator's leased items back first)."""
    rng = random.Random(seed)
    await asyncio.sleep(rng.uniform(0, interval))  # the team does not start in lockstep
    due = time.perf_counter()
    since_open = 0
    while time.perf_counter() < stop_at:
        if reopen_every and since_open >= reopen_every:
            page.queue.clear()
            since_open = 0
        if not page.queue:
            await page.refill()
            if not page.queue:  # empty or an error: ask again later, as the page polls
                await asyncio.sleep(1.0)
                continue
        await page.answer(nb.CLASSES[rng.randrange(len(nb.CLASSES))])
        since_open += 1
        if interval:
            due += interval * rng.uniform(0.8, 1.2)
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                due = time.perf_counter()  # behind: no burst to catch up


async def watch_processes(stats: Stats, pids: dict[str, int], profile: list[str]) -> None:
    """CPU time and memory of the server's processes at the start and end of the window;
    `profile` = [directory, "gil" or ""] records them with py-spy meanwhile."""
    await asyncio.sleep(max(0.0, stats.window[0] - time.perf_counter()))
    stats.before = await asyncio.to_thread(snapshot, pids)  # the ORM: not on the event loop
    if profile:
        spy(pids, profile, stats.window[1] - stats.window[0])
    while (left := stats.window[1] - time.perf_counter()) > 0:
        await asyncio.sleep(min(TRACE_SECONDS, left))
        rss = {name: usage[1] for name, usage in resident(pids).items()}
        stats.trace.append((time.perf_counter() - stats.window[0], stats.labels_in_window, rss))
    stats.after = await asyncio.to_thread(snapshot, pids)


def resident(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    """`snapshot` of the named processes only (no database query: it runs on the loop)."""
    return snapshot(pids, backends=False)


async def run_load(
    port: int,
    project_pk: int,
    annotators: list[nb.Annotator],
    *,
    pids: dict[str, int],
    profile: list[str],
    rate: float,
    reopen_every: int = 20,
    warmup: float,
    duration: float,
) -> tuple[Stats, float]:
    """All annotators at once; returns what they saw and the client's CPU seconds."""
    import aiohttp

    stats = Stats()
    base = f"http://127.0.0.1:{port}"
    interval = len(annotators) / rate if rate else 0.0
    start = time.perf_counter()
    stats.window = (start + warmup, start + warmup + duration)
    stop_at = stats.window[1]
    cpu0 = _self_cpu()
    sessions = []
    try:
        tasks = []
        for i, who in enumerate(annotators):
            jar = aiohttp.CookieJar(unsafe=True)  # 127.0.0.1 is an IP address
            jar.update_cookies(who.cookies)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2, keepalive_timeout=60),
                cookie_jar=jar,
                timeout=aiohttp.ClientTimeout(total=60),
            )
            sessions.append(session)
            page = PageClient(session, base, project_pk, who, stats)
            tasks.append(
                asyncio.create_task(annotator_loop(page, interval, stop_at, i, reopen_every))
            )
        tasks.append(asyncio.create_task(watch_processes(stats, pids, profile)))
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                stats.client_errors.append(repr(outcome))
    finally:
        for session in sessions:
            await session.close()
    return stats, _self_cpu() - cpu0


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- database


def reset_training(project_pk: int, overlap: int) -> None:
    """What `nb.prepare_project` leaves from an earlier run: gold labels, model versions,
    evaluation samples and review rows; and the overlap asked for."""
    from annotations.models import (
        GoldLabel,
        ItemAssignment,
        Project,
        Review,
        ReviewEvent,
    )
    from curation.models import EvalSample, ModelVersion, ProjectTraining

    ReviewEvent.objects.filter(review__project_id=project_pk).delete()
    Review.objects.filter(project_id=project_pk).delete()
    ItemAssignment.objects.filter(project_id=project_pk).delete()
    GoldLabel.objects.filter(project_id=project_pk).delete()
    EvalSample.objects.filter(project_id=project_pk).delete()
    ProjectTraining.objects.filter(project_id=project_pk).update(current_version=None)
    ModelVersion.objects.filter(project_id=project_pk).delete()
    ProjectTraining.objects.filter(project_id=project_pk).delete()
    Project.objects.filter(pk=project_pk).update(overlap=overlap)


@dataclass
class Verdict:
    acknowledged: int
    stored: int  # answers in the database for this project
    missing: int  # acknowledged, not stored
    duplicated: int  # acknowledged client UUIDs stored more than once
    unacknowledged: int  # stored, never acknowledged (a response lost in flight)
    over_overlap: int  # items with more non-skipped answers than the overlap
    served_twice: int  # overlap 1: items handed to two annotators

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.over_overlap or self.served_twice)


def verify(project_pk: int, stats: Stats, overlap: int) -> Verdict:
    """The database against what the annotators were told."""
    from django.db.models import Count

    from annotations.models import Annotation

    stored = Counter(
        str(u)
        for u in Annotation.objects.filter(project_id=project_pk).values_list(
            "client_uuid", flat=True
        )
    )
    acked = stats.acknowledged
    over = (
        Annotation.objects.filter(project_id=project_pk, skipped=False)
        .values("item_id")
        .annotate(n=Count("id"))
        .filter(n__gt=overlap)
        .count()
    )
    twice = sum(1 for who in stats.served.values() if len(who) > 1) if overlap == 1 else 0
    return Verdict(
        acknowledged=len(acked),
        stored=sum(stored.values()),
        missing=sum(1 for u in acked if u not in stored),
        duplicated=sum(1 for u in acked if stored.get(u, 0) > 1),
        unacknowledged=sum(1 for u in stored if u not in acked),
        over_overlap=over,
        served_twice=twice,
    )


# --------------------------------------------------------------------------- a run


@dataclass
class Result:
    size: int
    rate: float
    stats: Stats
    duration: float
    client_cpu: float
    elapsed: float  # wall-clock seconds of the whole run, warm-up included
    verdict: Verdict
    start: dict[str, tuple[float, int]]  # RSS before the run
    end: dict[str, tuple[float, int]]  # RSS after it (and the verification)

    @property
    def labels_per_s(self) -> float:
        return self.stats.labels_in_window / self.duration


def login_all(port: int, usernames: list[str]) -> list[nb.Annotator]:
    """Log every annotator in through the login form (a few at a time: PBKDF2 is slow)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda u: nb.login(port, u), usernames))


def measure(
    port: int, project_pk: int, size: int, annotators: list[nb.Annotator], pids, args
) -> Result:
    """One load run on a project freshly reset (a few seconds of the run are warm-up)."""
    before = snapshot(pids)
    started = time.perf_counter()
    stats, client_cpu = asyncio.run(
        run_load(
            port,
            project_pk,
            annotators,
            pids=pids,
            profile=[args.py_spy, "gil" if args.py_spy_gil else ""] if args.py_spy else [],
            rate=args.rate,
            reopen_every=args.reopen_every,
            warmup=args.warmup,
            duration=args.duration,
        )
    )
    elapsed = time.perf_counter() - started
    after = snapshot(pids)
    verdict = verify(project_pk, stats, args.overlap)
    return Result(
        size, args.rate, stats, args.duration, client_cpu, elapsed, verdict, before, after
    )


def run(args: argparse.Namespace, env: dict[str, str], usernames: list[str], projects) -> list:
    results = []
    with nb.running_server("uvicorn", args.workers, {**env, **nb.DB_MODES["pool"]}) as port:
        server_pid = uvicorn_pid()
        annotators = login_all(port, usernames)
        for size, pk in projects.items():
            worker = None if args.no_trainworker else running_trainworker(env)
            worker_pid = worker.__enter__() if worker else None
            try:
                pids = server_processes(server_pid, worker_pid)
                result = measure(port, pk, size, annotators, pids, args)
            finally:
                if worker:
                    worker.__exit__(None, None, None)
            results.append(result)
            print(summary(result))
    return results


# --------------------------------------------------------------------------- report


def summary(r: Result) -> str:
    n50, n95, n99 = nb.percentiles(r.stats.next_ms)
    s50, s95, s99 = nb.percentiles(r.stats.submit_ms)
    v = r.verdict
    return (
        f"  {r.size:>9,} items: {r.labels_per_s:.1f} labels/s; submit p50/p95/p99 "
        f"{s50:.1f}/{s95:.1f}/{s99:.1f} ms ({len(r.stats.submit_ms)}), next "
        f"{n50:.1f}/{n95:.1f}/{n99:.1f} ms ({len(r.stats.next_ms)}); client CPU "
        f"{r.client_cpu:.1f} s; acknowledged {v.acknowledged}, stored {v.stored}, missing "
        f"{v.missing}, duplicated {v.duplicated}, over overlap {v.over_overlap}, served twice "
        f"{v.served_twice}; {'OK' if v.ok else 'FAILED'}"
    )


def results_table(results: list[Result]) -> str:
    out = (
        "| items | offered labels/s | labels/s | submit p50 | p95 | p99 | next p50 | p95 | p99 "
        "| client CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in results:
        n = nb.percentiles(r.stats.next_ms)
        s = nb.percentiles(r.stats.submit_ms)
        share = 100 * r.client_cpu / max(1e-9, r.elapsed)  # % of one core
        offered = f"{r.rate:.0f}" if r.rate else "flat out"
        cells = [f"{r.size:,}", offered, f"{r.labels_per_s:.1f}"]
        cells += [nb.ms(x) if r.stats.submit_ms else "–" for x in s]
        cells += [nb.ms(x) if r.stats.next_ms else "–" for x in n]
        cells.append(f"{r.client_cpu:.1f} s (~{share:.0f}% of a core)")
        out += "| " + " | ".join(cells) + " |\n"
    return out


def checks_table(results: list[Result]) -> str:
    out = (
        "| items | acknowledged | stored | missing | stored twice | stored, not acknowledged "
        "| items over overlap | served twice | errors by status |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    for r in results:
        v = r.verdict
        errors = ", ".join(
            f"{kind} {status}: {n}"
            for (kind, status), n in sorted(r.stats.statuses.items())
            if status != 200
        )
        errors = errors or "none"
        if r.stats.client_errors:
            errors += f"; client: {r.stats.client_errors[0][:80]}"
        cells = [v.acknowledged, v.stored, v.missing, v.duplicated, v.unacknowledged]
        cells += [v.over_overlap, v.served_twice]
        out += f"| {r.size:,} | " + " | ".join(f"{c:,}" for c in cells) + f" | {errors} |\n"
    return out


def memory_table(results: list[Result]) -> str:
    out = (
        "| items | process | RSS before the run | highest in the window | RSS after it "
        "| CPU s in the window | CPU ms per label in the window |\n"
        "|---:|---|---:|---:|---:|---:|---:|\n"
    )
    for r in results:
        labels = max(1, r.stats.labels_in_window)
        for name, (_, rss) in r.start.items():
            if name.startswith(PG):
                continue
            cpu = r.stats.before.get(name, (0.0, 0))[0]
            cpu1 = r.stats.after.get(name, (cpu, 0))[0]
            rss1 = r.end.get(name, (0.0, rss))[1]
            peak = max((t[2].get(name, 0) for t in r.stats.trace), default=rss1)
            out += (
                f"| {r.size:,} | {name} | {rss / 2**20:.0f} MB | {peak / 2**20:.0f} MB "
                f"| {rss1 / 2**20:.0f} MB | {cpu1 - cpu:.1f} "
                f"| {1000 * (cpu1 - cpu) / labels:.1f} |\n"
            )
        # Backends that connected during the window count whole (they are new).
        pg = [k for k in r.stats.after if k.startswith(PG)]
        cpu = sum(r.stats.after[k][0] - r.stats.before.get(k, (0.0, 0))[0] for k in pg)
        out += f"| {r.size:,} | {PG} ({len(pg)}) | | | {cpu:.1f} | {1000 * cpu / labels:.1f} |\n"
    return out


def worker_trace_table(results: list[Result]) -> str:
    """The training worker's RSS through the window, about ten rows per run."""
    out = "| items | seconds into the window | labels so far | training worker RSS |\n"
    out += "|---:|---:|---:|---:|\n"
    for r in results:
        rows = [t for t in r.stats.trace if "trainworker" in t[2]]
        step = max(1, len(rows) // 10)
        for seconds, labels, rss in rows[step - 1 :: step]:
            worker = rss["trainworker"] / 2**20
            out += f"| {r.size:,} | {seconds:.0f} | {labels:,} | {worker:.0f} MB |\n"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    idle = nb.idle_percent()
    if idle is not None and idle < 80:
        print(f"warning: the CPUs are only {idle:.0f}% idle; figures will be lower than usual")
    env = nb.base_env(args, secrets.token_urlsafe(48))
    env["TRAINING_WORKER"] = "external"
    nb.ensure_database(args.database_url)
    nb.migrate(env)
    nb.django_setup(env)
    from django.db import connection

    usernames = nb.prepare_users(args.annotators)
    projects = {}
    for size in args.size_list:
        pk = nb.prepare_project(size, usernames, reload=args.reload)
        reset_training(pk, args.overlap)
        projects[size] = pk
    nb.vacuum_analyze()
    connection.close()

    with tempfile.TemporaryDirectory(prefix="bench-load-") as data_dir:
        env["DATA_DIR"] = data_dir  # model files of the run, not the checkout's data/
        results = run(args, env, usernames, projects)
    table = results_table(results)
    print("\n" + table + "\n" + checks_table(results) + "\n" + memory_table(results))
    # machine_info's lines about next_item.py's requests and worker are dropped: said below
    args.requests, args.worker = 0, not args.no_trainworker
    info = nb.machine_info(args, "unknown" if idle is None else f"{idle:.0f}")
    info = "\n".join(
        line
        for line in info.splitlines()
        if "measured requests" not in line and "training worker:" not in line
    )
    text = (
        "# A team labelling at once\n\n"
        "Written by `benchmarks/load.py`; see `benchmarks/README.md`.\n\n"
        f"{info}\n"
        f"- {args.annotators} annotators (distinct accounts), each with its own kept-alive "
        "connections (aiohttp, at most 2), the annotate page's protocol (next?count=2, then "
        f"submit with want/exclude; the page reopened every {args.reopen_every} labels); "
        f"{'offered ' + format(args.rate, '.0f') + ' labels/s' if args.rate else 'flat out'}; "
        f"{args.warmup:.0f} s warm-up, then {args.duration:.0f} s measured; overlap "
        f"{args.overlap}; uvicorn with {args.workers} worker processes, DB_POOL=1, "
        f"{'no training worker' if args.no_trainworker else 'one manage.py trainworker'}\n\n"
        f"## Throughput and latency (ms)\n\n{table}\n"
        f"## Checked against the database\n\n{checks_table(results)}\n"
        f"## Processes\n\n{memory_table(results)}"
        f"\n## The training worker's memory through the window\n\n{worker_trace_table(results)}"
        + (
            "\nWhat it logged about its memory ceiling (`curation.recycling`):\n\n"
            + "".join(f"    {line}\n" for line in WORKER_EVENTS)
            if WORKER_EVENTS
            else ""
        )
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}")
    return 0 if all(r.verdict.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

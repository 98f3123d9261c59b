"""The processes of a benchmark run, seen from /proc (Linux): CPU time and RSS of the server's
processes, the training worker and the PostgreSQL backends of the benchmark's database, plus
starting the training worker and recording them with py-spy. Used by `benchmarks/load.py` and
`benchmarks/next_item.py`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# py-spy from the same environment (`pip install -e '.[test]'`), else from PATH
PY_SPY = str(Path(sys.executable).with_name("py-spy"))
if not Path(PY_SPY).exists():
    PY_SPY = "py-spy"


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds, RSS bytes) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss = next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line[:6] == "VmRSS:"), 0
    )
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, rss


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (uvicorn's master, its helper and workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            parents.setdefault(info[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return sorted(out)


def snapshot(pids: dict[str, int], *, backends: bool = True) -> dict[str, tuple[float, int]]:
    """name -> (CPU seconds, RSS bytes) for each process still alive; with `backends`, the
    PostgreSQL backends serving the benchmark's database (a local server) too."""
    out = {}
    for name, pid in pids.items():
        info = _stat(pid)
        if info is not None:
            out[name] = (info[1], info[2])
    for pid in _postgres_backends() if backends else []:
        if (info := _stat(pid)) is not None:
            out[f"{PG} {pid}"] = (info[1], 0)
    return out


PG = "PostgreSQL backends"


def _postgres_backends() -> list[int]:
    """Pids of the backends connected to this benchmark's database (other helpers' work on
    the same server is not counted)."""
    from django.db import connection

    try:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cur.fetchall()]
    except Exception:  # noqa: BLE001 - a measurement, never a reason to fail the run
        return []
    finally:
        connection.close()  # called from a worker thread: leave no connection behind


def server_processes(server_pid: int, worker_pid: int | None) -> dict[str, int]:
    names = {}
    for n, pid in enumerate(process_tree(server_pid)):
        names["uvicorn master" if pid == server_pid else f"uvicorn child {n}"] = pid
    if worker_pid is not None:
        names["trainworker"] = worker_pid
    return names


@contextmanager
def running_trainworker(env: dict[str, str]):
    """`manage.py trainworker` as production runs it; yields its pid once it listens; stops it."""
    worker = start_training_worker(env)
    try:
        yield worker.proc.pid
    finally:
        worker.stop()


def uvicorn_pid() -> int:
    """The pid of the uvicorn started by `nb.running_server` (its newest child process)."""
    mine = os.getpid()
    children = [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit()
        and (info := _stat(int(e.name)))
        and info[0] == mine
        and b"uvicorn" in _cmdline(int(e.name))
    ]
    return max(children)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def spy(pids: dict[str, int], profile: list[str], seconds: float) -> None:
    """Start one `py-spy record` per process (they end by themselves after `seconds`)."""
    out = Path(profile[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, pid in pids.items():
        cmd = [PY_SPY, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "50"]
        cmd += ["-f", "raw", "--nonblocking", "-o", str(out / f"{name.replace(' ', '-')}.txt")]
        if profile[1]:
            cmd.append("--gil")
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_mib(pid: int) -> float | None:
    """Resident set size now (VmRSS), in MiB."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size so far (VmHWM), in MiB."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib / 1024


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "server master"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "resource_tracker" in cmdline or "semaphore_tracker" in cmdline:
        return "server helper"
    return "server worker"


def server_memory(root: int) -> list[tuple[str, int, float]]:
    """(role, pid, RSS MiB) of the server's master and every process it started."""
    out = []
    for pid in process_tree(root):
        rss = rss_mib(pid)
        if rss is not None:
            out.append((_role(pid, root), pid, rss))
    return out


#: Every stopped training worker's `memory_events`, for the benchmarks' reports.
WORKER_EVENTS: list[str] = []


@dataclass
class TrainingWorker:
    """A `manage.py trainworker` process, as production runs beside the server."""

    proc: subprocess.Popen
    log_path: Path

    def rss_mib(self) -> float | None:
        return rss_mib(self.proc.pid)

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.proc.pid)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    def memory_events(self) -> list[str]:
        """What the worker logged about its memory ceiling (`curation.recycling`)."""
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return []
        marks = (
            "settled at",
            "grew from",
            "handing the jobs",
            "handed over",
            "queued jobs left",
            "still in hand",
            "replacing itself",
            "training worker on channel",
        )
        return [line for line in lines if any(mark in line for mark in marks)]

    def stop(self) -> None:
        WORKER_EVENTS.extend(self.memory_events())
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if keep := os.environ.get("BENCH_WORKER_LOG"):  # the whole log, for a diagnosis
            with open(keep, "a") as out:
                out.write(self.log_path.read_text())
        self.log_path.unlink(missing_ok=True)


def start_training_worker(env: dict[str, str]) -> TrainingWorker:
    """Start `manage.py trainworker` in its own process group; returns once it listens."""
    from curation.worker import TRAINING_CHANNEL

    fd, name = tempfile.mkstemp(prefix="bench-training-worker-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "trainworker"],
            env={**env, "LOG_LEVEL": "INFO"},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = TrainingWorker(proc, Path(name))
    deadline = time.monotonic() + 60
    while f"training worker on channel {TRAINING_CHANNEL!r}" not in worker.log_tail():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = worker.log_tail()
            worker.stop()
            raise SystemExit(f"the training worker did not start:\n{tail}")
        time.sleep(0.1)
    return worker

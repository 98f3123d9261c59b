"""Processes the benchmarks run beside the server: the training worker, and the memory of a
process tree (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        children = sorted(parents.get(todo.pop(0), []))
        out += children
        todo += children
    return out


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
    for pid in [root, *descendants(root)]:
        rss = rss_mib(pid)
        if rss is not None:
            out.append((_role(pid, root), pid, rss))
    return out


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

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
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

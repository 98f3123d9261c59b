"""The processes of a benchmark run, seen from /proc (Linux): CPU time and RSS of the server's
processes, the training worker and the PostgreSQL backends of the benchmark's database, plus
starting the training worker and recording them with py-spy. Used by `benchmarks/load.py`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
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


def snapshot(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    """name -> (CPU seconds, RSS bytes) for each process still alive; the PostgreSQL backends
    serving the benchmark's database (a local server) are summed as one row."""
    out = {}
    for name, pid in pids.items():
        info = _stat(pid)
        if info is not None:
            out[name] = (info[1], info[2])
    for pid in _postgres_backends():
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
    """`manage.py trainworker` as production runs it; yields its pid; stops it."""
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "trainworker"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(1.0)
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"trainworker exited with {proc.returncode}:\n{log.read()[-3000:]}")
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        os.unlink(log.name)


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

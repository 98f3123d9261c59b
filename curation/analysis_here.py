"""Running one analysis from a management command: queued like any request, then run in this
process with a progress callback (or, if a worker claimed it first, waited for), so the
command's run is recorded and shown on the pages like a worker's."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from annotations.models import Project
from curation import analysis_runs
from curation.dataset_models import AnalysisRun

#: Seconds between looks at a run another worker is doing.
POLL = 0.5


class AnalysisFailed(Exception):
    """The run failed; the message is its recorded error."""


def analysis_run_here(
    *, project: Project, kind: str, progress: Callable[[float, str], None] | None = None
) -> AnalysisRun:
    """Run `kind` for `project` now and return the finished run; `progress(share, message)`
    follows it. Raises AnalysisFailed when it fails."""
    run = analysis_runs.run_request(project=project, kind=kind)
    claimed = analysis_runs.run_claim(project, kind, automatic=False)
    if claimed is None:  # a worker has it: follow its row
        while run.status in (AnalysisRun.Status.QUEUED, AnalysisRun.Status.RUNNING):
            time.sleep(POLL)
            run.refresh_from_db()
            if progress is not None:
                progress(run.progress, run.message)
    else:
        run = claimed
        reporter = analysis_runs.Reporter(run)
        module = importlib.import_module(analysis_runs.ANALYSES[kind])

        def report(done: float, total: float, message: str = "") -> None:
            reporter(done, total, message)
            if progress is not None:
                progress(min(1.0, done / total) if total else 0.0, message)

        started = time.perf_counter()
        try:
            result = module.run(project, run, report)
        except Exception as exc:
            analysis_runs.run_finish(run, result=None, error=f"{type(exc).__name__}: {exc}")
            raise AnalysisFailed(run.error) from exc
        result = {**(result or {}), "seconds": round(time.perf_counter() - started, 2)}
        analysis_runs.run_finish(run, result=result)
    if run.status == AnalysisRun.Status.FAILED:
        raise AnalysisFailed(run.error)
    return run

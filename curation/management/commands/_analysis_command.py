"""What the analysis commands (`find_label_errors`, `predict_items`, `find_duplicates`,
`find_outliers`) share: run one analysis in this process with a progress bar (or follow the run
a worker has already claimed), and fail with the run's error."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations.models import Project
from curation.jobs import analysis_run_inline
from curation.models import AnalysisRun

#: Seconds between looks at a run a worker is doing.
POLL = 0.5


def run_with_bar(command: BaseCommand, project: Project, kind: str, *, quiet: bool) -> AnalysisRun:
    """Run `kind` for `project` now (or follow a worker's run of it), showing its progress on
    stderr; raise CommandError when it failed."""
    bar = tqdm(
        total=100,
        desc=AnalysisRun.Kind(kind).label,
        unit="%",
        file=command.stderr._out,  # the raw stream: OutputWrapper would add newlines
        disable=quiet,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
    )

    def progress(run: AnalysisRun) -> None:
        bar.update(round(run.progress * 100) - bar.n)
        bar.set_postfix_str(run.message, refresh=True)

    try:
        run = analysis_run_inline(project, kind, progress=progress)
        if run is None:  # a worker has it: follow its row
            run = AnalysisRun.objects.filter(project=project, kind=kind).order_by("-id").first()
            while run.status in (AnalysisRun.Status.QUEUED, AnalysisRun.Status.RUNNING):
                time.sleep(POLL)
                run.refresh_from_db()
                progress(run)
    finally:
        bar.close()
    if run.status != AnalysisRun.Status.DONE:
        raise CommandError(f"{AnalysisRun.Kind(kind).label} failed: {run.error}")
    return run

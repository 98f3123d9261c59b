"""What `find_label_errors` and `predict_items` share: run one analysis in this process with a
progress bar, and fail with the run's error."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations.models import Project
from curation.jobs import analysis_run_inline
from curation.models import AnalysisRun


def run_with_bar(command: BaseCommand, project: Project, kind: str, *, quiet: bool) -> AnalysisRun:
    """Run `kind` for `project` now, showing its progress on stderr; raise CommandError when
    it failed or a worker is running one already."""
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
    finally:
        bar.close()
    if run is None:
        raise CommandError(
            f"A worker is running {AnalysisRun.Kind(kind).label.lower()} for "
            f"{project.name!r} now; wait for it to finish."
        )
    if run.status != AnalysisRun.Status.DONE:
        raise CommandError(f"{AnalysisRun.Kind(kind).label} failed: {run.error}")
    return run

"""`manage.py find_label_errors PROJECT --output FILE.jsonl`: find a project's likely label
errors now (the training worker's analysis, run in this process) and write one JSON line per
flagged item, most likely wrong first."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.management.commands.import_items import find_project
from curation.label_issues import label_issues_for
from curation.management.commands._analysis_command import run_with_bar
from curation.models import AnalysisRun, LabelIssue


class Command(BaseCommand):
    help = (
        "Find likely label errors (cross-validated model + confident learning) and write one "
        "JSON line per flagged item: external_id, score, suggested_label, gold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("--output", required=True, help="The .jsonl file to write.")
        parser.add_argument("--limit", type=int, default=None, help="Write at most this many.")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        output = Path(options["output"])
        if not output.parent.is_dir():
            raise CommandError(f"--output {output}: no such folder {output.parent}.")
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1, got {limit}.")
        run = run_with_bar(
            self, project, AnalysisRun.Kind.LABEL_ERRORS, quiet=options["no_progress"]
        )
        rows = label_issues_for(project, status=LabelIssue.Status.FLAGGED)
        written = 0
        with output.open("w", encoding="utf-8") as handle:
            for issue in rows[:limit] if limit else rows.iterator(chunk_size=2000):
                line = {
                    "external_id": issue.item.external_id,
                    "score": round(issue.score, 4),
                    "suggested_label": issue.suggested,
                    "gold": issue.gold,
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                written += 1
        self.stdout.write(
            self.style.SUCCESS(f"{run.message}. Wrote {written:,} lines to {output}.")
        )

"""`manage.py find_duplicates PROJECT [--output FILE.jsonl]`: find a project's exact and near
duplicate groups now (the worker's analysis, run here with a progress bar) and write one JSON
line per group: its items' `external_ids`, `kind` (exact/near) and whether their gold labels
are `conflicting`."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from annotations.management.commands.import_items import find_project
from curation.dataset_models import AnalysisRun
from curation.duplicate_review import duplicate_groups, group_members
from curation.management.commands._analysis_command import run_with_bar

GROUPS_PER_QUERY = 1000


class Command(BaseCommand):
    help = "Find a project's duplicate groups and write them as JSON lines."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("--output", help="Write the groups here (JSONL); default: stdout.")
        parser.add_argument(
            "--conflicting", action="store_true", help="Only groups whose gold labels differ."
        )
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        run = run_with_bar(self, project, AnalysisRun.Kind.DUPLICATES, quiet=options["no_progress"])
        groups = duplicate_groups(project, conflicting=True if options["conflicting"] else None)
        written = 0
        output = options["output"]
        with (
            Path(output).open("w", encoding="utf-8")
            if output
            else nullcontext(self.stdout) as target
        ):
            ids = list(groups.order_by("pk").values_list("pk", "kind", "conflicting"))
            for start in range(0, len(ids), GROUPS_PER_QUERY):
                chunk = ids[start : start + GROUPS_PER_QUERY]
                members = group_members([pk for pk, _, _ in chunk])
                for pk, kind, conflicting in chunk:
                    line = {
                        "external_ids": [m.external_id for m in members.get(pk, [])],
                        "kind": kind,
                        "conflicting": conflicting,
                    }
                    target.write(json.dumps(line, ensure_ascii=False) + "\n")
                    written += 1
        if output:
            self.stderr.write(f"{run.message}. {written:,} groups written to {options['output']}.")

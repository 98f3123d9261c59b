"""`manage.py find_outliers PROJECT [--output FILE.jsonl] [--top N]`: score how far each item
lies from the rest (the worker's outliers analysis, run here with a progress bar) and write the
strangest items first, one JSON line each: `external_id`, `score` and its nearest `neighbours`'
external ids."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from annotations.management.commands.import_items import find_project
from annotations.models import Item
from curation.dataset_models import AnalysisRun, ItemOutlier
from curation.management.commands._analysis_command import run_with_bar


class Command(BaseCommand):
    help = "Score a project's items by how unusual they are and write the strangest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("--output", help="Write the items here (JSONL); default: stdout.")
        parser.add_argument("--top", type=int, default=100, help="How many items (default 100).")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        run_with_bar(self, project, AnalysisRun.Kind.OUTLIERS, quiet=options["no_progress"])
        rows = list(
            ItemOutlier.objects.filter(project=project)
            .order_by("-score", "item_id")
            .values_list("item_id", "item__external_id", "score", "neighbours")[: options["top"]]
        )
        names = dict(
            Item.objects.filter(
                pk__in={n[0] for *_, neighbours in rows for n in neighbours}
            ).values_list("pk", "external_id")
        )
        output = options["output"]
        with (
            Path(output).open("w", encoding="utf-8")
            if output
            else nullcontext(self.stdout) as target
        ):
            for _, external_id, score, neighbours in rows:
                line = {
                    "external_id": external_id,
                    "score": score,
                    "neighbours": [names.get(pk) for pk, _ in neighbours],
                }
                target.write(json.dumps(line, ensure_ascii=False) + "\n")

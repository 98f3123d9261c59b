"""`manage.py predict_items PROJECT`: predict every item of a project with its current model
now (the training worker's analysis, run in this process), for the data browser."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from annotations.management.commands.import_items import find_project
from curation.management.commands._analysis_command import run_with_bar
from curation.models import AnalysisRun


class Command(BaseCommand):
    help = "Predict every item of a project with its current model (the data browser's column)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        run = run_with_bar(
            self, project, AnalysisRun.Kind.PREDICTIONS, quiet=options["no_progress"]
        )
        self.stdout.write(self.style.SUCCESS(run.message))

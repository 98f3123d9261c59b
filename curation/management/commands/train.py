"""`manage.py train`: train projects now, from the database (the same code as the worker).

Useful after a long outage of every worker, or from cron as a belt-and-braces catch-up; the
workers and open annotate pages already catch up on their own.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.models import Project
from curation import services, trainer


class Command(BaseCommand):
    help = "Train the given projects (default: every project with labels its model has not seen)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_ids", nargs="*", type=int, help="Projects to train.")

    def handle(self, *args, project_ids: list[int], **options) -> None:
        if project_ids:
            missing = set(project_ids) - set(
                Project.objects.filter(pk__in=project_ids).values_list("id", flat=True)
            )
            if missing:
                raise CommandError(f"No project with id {', '.join(map(str, sorted(missing)))}.")
        ids = project_ids or services.stale_projects()
        if not ids:
            self.stdout.write("Every model is up to date.")
            return
        for project_id in ids:
            result = trainer.train(project_id)
            if result is None:
                self.stdout.write(f"project {project_id}: up to date")
            else:
                v = result.version
                self.stdout.write(
                    f"project {project_id}: model v{v.version} on {v.labels_used} labels, "
                    f"{result.ranked} items ranked, {v.duration_ms} ms"
                )

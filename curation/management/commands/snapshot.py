"""`manage.py snapshot PROJECT [--name NAME] [--note TEXT] [--metrics]`: save a dataset version
of the project now and print its name and content hash."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.management.commands.import_items import find_project
from curation.dataset_versions import VersionError, version_create
from curation.version_models import DatasetVersion


class Command(BaseCommand):
    help = (
        "Save an immutable dataset version of a project (items, gold labels, schema, answers, "
        "splits) and print its name and content hash. A worker measures its model later, or "
        "--metrics measures it here."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("--name", default="", help="Version name (default: v<number>).")
        parser.add_argument("--note", default="", help="What this version is for.")
        parser.add_argument(
            "--metrics",
            action="store_true",
            help="Also train and score the model on the version's splits before returning.",
        )

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        try:
            version = version_create(project, name=options["name"], note=options["note"])
        except VersionError as exc:
            raise CommandError(str(exc)) from exc
        if version.status != DatasetVersion.Status.READY:
            raise CommandError(f"Version {version.name} failed: {version.error}")
        self.stdout.write(f"{version.name} {version.content_hash}")
        self.stderr.write(
            f"{version.items} items, {version.labelled} labelled, {version.answers} answers; "
            f"file {version.file_size} bytes."
        )
        if options["metrics"]:
            from curation.version_metrics import metrics_measure

            metrics = metrics_measure(version)
            self.stderr.write(f"Model on the test split: {_metrics_line(metrics)}")


def _metrics_line(metrics: dict) -> str:
    if "accuracy" in metrics:
        low, high = metrics["accuracy_interval"]
        return (
            f"accuracy {metrics['accuracy']:.3f} (95% {low:.3f}–{high:.3f}), macro F1 "
            f"{metrics['f1_macro']:.3f}, {metrics['train']} train / {metrics['test']} test"
        )
    return metrics.get("reason") or metrics.get("error", "not measured")

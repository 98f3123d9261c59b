"""`manage.py diff_versions PROJECT A B [--json]`: what changed from dataset version A to B."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.management.commands.import_items import find_project
from curation.dataset_versions import VersionError, VersionFileError, version_named
from curation.version_diff import diff_of


class Command(BaseCommand):
    help = "Compare two dataset versions: items added, removed and relabelled (from -> to)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("a", help="The older version's name.")
        parser.add_argument("b", help="The newer version's name.")
        parser.add_argument("--json", action="store_true", help="The whole diff as JSON.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        try:
            a = version_named(project, options["a"])
            b = version_named(project, options["b"])
            diff = diff_of(a, b)
        except (VersionError, VersionFileError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(diff, ensure_ascii=False, indent=2))
            return
        summary = diff["summary"]
        self.stdout.write(
            f"{diff['from']} -> {diff['to']}: "
            + ", ".join(f"{n} {kind}" for kind, n in summary.items())
        )
        for pair in diff["pairs"]:
            self.stdout.write(f"  {pair['from']} -> {pair['to']}: {pair['items']}")

"""`manage.py export_labels PROJECT --format jsonl|csv [--output FILE]`: stream a project's
labels to a file or to stdout."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandParser

from annotations import exports
from annotations.management.commands.import_items import find_project


class Command(BaseCommand):
    help = "Export a project's items and labels as JSONL (one item a line) or CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("--format", choices=list(exports.FORMATS), default="jsonl")
        parser.add_argument("--output", "-o", default=None, help="File to write (default stdout).")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        fmt = options["format"]
        chunks = exports.export_chunks(project, fmt)
        output = options["output"]
        if output and output != "-":
            with open(output, "w", encoding="utf-8", newline="") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            self.stderr.write(f"Exported {project.name!r} as {fmt} to {output}.")
        else:
            stream = self.stdout._out  # raw: the export has its own line endings
            for chunk in chunks:
                stream.write(chunk)
            if stream is sys.stdout:
                stream.flush()

"""`manage.py export_labels PROJECT [FILE] [--format jsonl|csv]`: stream a project's labels to
a file, or to stdout when FILE is `-` or left out. The file is an argument, as for `import_items`;
`--output FILE` is kept as an alias."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import exports
from annotations.management.commands.import_items import find_project


class Command(BaseCommand):
    help = "Export a project's items and labels as JSONL (one item a line) or CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument(
            "path", nargs="?", default=None, help="File to write; - or none: standard output."
        )
        parser.add_argument("--format", choices=list(exports.FORMATS), default="jsonl")
        parser.add_argument(
            "--output", "-o", default=None, help="Same as the FILE argument (older spelling)."
        )

    def handle(self, *args, **options) -> None:
        path, alias = options["path"], options["output"]
        if path is not None and alias is not None and path != alias:
            raise CommandError(f"Two output files given: {path!r} and --output {alias!r}.")
        project = find_project(options["project"])
        fmt = options["format"]
        chunks = exports.export_chunks(project, fmt)
        output = path if path is not None else alias
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

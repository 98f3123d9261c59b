"""`manage.py export_labels PROJECT [FILE] [--format jsonl|csv|labelstudio|doccano|hf]`: stream
a project's labels to a file, or to stdout when FILE is `-` or left out. The file is an argument,
as for `import_items`; `--output FILE` is kept as an alias. `labelstudio` writes Label Studio
tasks, `doccano` doccano JSONL, `hf` a Hugging Face `datasets` folder of the live data (needs an
output folder).

`--version NAME` exports a saved dataset version instead of the live data, in jsonl, csv, hf
(a Hugging Face `datasets` folder) or folders (image projects: a folder per class); the last
two need an output folder."""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import exports
from annotations.management.commands.import_items import find_project

VERSION_FORMATS = ("jsonl", "csv", "hf", "folders")
LIVE_FORMATS = (*exports.FORMATS, "hf", "folders")
FOLDER_FORMATS = ("hf", "folders")


class Command(BaseCommand):
    help = (
        "Export a project's items and labels as JSONL (one item a line) or CSV; with --version, "
        "a saved dataset version as jsonl, csv, hf or folders."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs) -> CommandParser:
        # `--version NAME` names a dataset version here, in place of Django's --version flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument(
            "path", nargs="?", default=None, help="File to write; - or none: standard output."
        )
        parser.add_argument(
            "--format",
            choices=list(dict.fromkeys([*LIVE_FORMATS, *VERSION_FORMATS])),
            default="jsonl",
        )
        parser.add_argument(
            "--output", "-o", default=None, help="Same as the FILE argument (older spelling)."
        )
        parser.add_argument(
            "--version",
            dest="dataset_version",
            default=None,
            help="A dataset version's name (or number): export it instead of the live data.",
        )

    def handle(self, *args, **options) -> None:
        path, alias = options["path"], options["output"]
        if path is not None and alias is not None and path != alias:
            raise CommandError(f"Two output files given: {path!r} and --output {alias!r}.")
        project = find_project(options["project"])
        fmt = options["format"]
        output = path if path is not None else alias
        if options["dataset_version"] is not None:
            self._version(project, options["dataset_version"], fmt, output)
            return
        if fmt in FOLDER_FORMATS:
            self._folder(project, fmt, output)
            return
        if fmt not in exports.FORMATS:
            raise CommandError(
                f"--format {fmt} needs --version: the live data exports as "
                f"{', '.join(LIVE_FORMATS)}."
            )
        self._write(exports.export_chunks(project, fmt), output)
        if output and output != "-":
            self.stderr.write(f"Exported {project.name!r} as {fmt} to {output}.")

    def _write(self, chunks, output: str | None) -> None:
        """Text chunks (str, or UTF-8 bytes) to the file, or to stdout unchanged."""
        if output and output != "-":
            with open(output, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
            return
        stream = self.stdout._out  # raw: the export has its own line endings
        for chunk in chunks:
            stream.write(chunk.decode("utf-8") if isinstance(chunk, bytes) else chunk)
        if stream is sys.stdout:
            stream.flush()

    def _folder(self, project, fmt: str, output: str | None) -> None:
        from annotations.exporters.hf import live_folder_export
        from curation.version_rows import ExportError

        if not output or output == "-":
            raise CommandError(f"--format {fmt} writes a folder: give --output PATH.")
        try:
            live_folder_export(project, fmt, Path(output), media_root=Path(settings.MEDIA_ROOT))
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"Exported {project.name!r} as {fmt} to {output}.")

    def _version(self, project, name: str, fmt: str, output: str | None) -> None:
        if fmt not in VERSION_FORMATS:
            raise CommandError(
                f"--format {fmt} exports the live data; a version exports as "
                f"{', '.join(VERSION_FORMATS)}."
            )
        from curation import version_exports
        from curation.dataset_versions import (
            VersionError,
            VersionFileError,
            version_named,
            version_open,
        )

        try:
            version = version_named(project, name)
            header, rows = version_open(version)
            if fmt in ("jsonl", "csv"):
                self._write(version_exports.version_export_stream(header, rows, fmt), output)
                written = [output] if output and output != "-" else []
            else:
                if not output or output == "-":
                    raise CommandError(f"--format {fmt} writes a folder: give --output PATH.")
                written = version_exports.version_export(
                    header,
                    rows,
                    fmt,
                    Path(output),
                    media_root=Path(settings.MEDIA_ROOT),
                    version_name=version.name,
                    content_hash=version.content_hash,
                )
        except (VersionError, VersionFileError, version_exports.ExportError) as exc:
            raise CommandError(str(exc)) from exc
        if written:
            self.stderr.write(
                f"Exported version {version.name} of {project.name!r} as {fmt} to {output} "
                f"({len(written)} file{'s' if len(written) != 1 else ''})."
            )

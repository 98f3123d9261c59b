"""`manage.py import_items PROJECT PATH [--format …]`: import a file or folder into a project,
all or nothing, with a progress bar: our CSV/JSON/JSONL, Label Studio tasks, doccano JSONL, a
Hugging Face dataset (folder or file), images (a folder or zip, optionally a folder per class)
or a COCO archive or folder. Without --format the format is read from the content."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotations import imports
from annotations.models import Project


def find_project(ref: str) -> Project:
    """A project by id or by exact name."""
    project = None
    if ref.isdigit():
        project = Project.objects.filter(pk=int(ref)).first()
    if project is None:
        project = Project.objects.filter(name=ref).first()
    if project is None:
        raise CommandError(f"No project with id or name {ref!r}.")
    return project


class Command(BaseCommand):
    help = (
        "Import items into a project: CSV, JSON, JSONL, Label Studio, doccano or Hugging Face "
        "files (text projects), a folder or .zip of images, a folder per class or COCO (image "
        "projects). A file with any error imports nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("path", help="A .csv/.json/.jsonl file, a folder, or a .zip file.")
        parser.add_argument(
            "--text-field", default="text", help='Column/field holding the text (default "text").'
        )
        parser.add_argument(
            "--id-field",
            default=None,
            help='Column/field holding the item id (default "id" when present, '
            "else file name and line).",
        )
        parser.add_argument(
            "--format",
            choices=imports.ALL_FORMATS,
            default=None,
            help="File format (default: read from the content).",
        )
        parser.add_argument(
            "--skip-duplicates",
            action="store_true",
            help="Leave out exact duplicates (normalised text or image bytes) of items already "
            "in the project or earlier in the file; they are listed either way.",
        )
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        path = Path(options["path"])
        if not path.exists():
            raise CommandError(f"{path}: no such file or folder.")
        fmt = options["format"]
        try:
            if path.is_dir():
                fmt = fmt or imports.sniff_folder(path)
            elif fmt is None:
                with path.open("rb") as fileobj:
                    fmt = imports.sniff_format(fileobj, path.name)
        except imports.ImportFailed as exc:
            self.fail(exc, path)
        # Text: bytes of the file read, known from the start; images: images checked, the total
        # known once the folder or archive has been listed; Hugging Face: rows read.
        counted = path.is_dir() or fmt in ("zip", "coco", "folders", "hf")
        bar = tqdm(
            desc=f"Importing {path.name}",
            total=None if counted else path.stat().st_size,
            unit=("rows" if fmt == "hf" else "img") if counted else "B",
            unit_scale=not counted,
            unit_divisor=1024,
            file=self.stderr._out,  # the raw stream: OutputWrapper would add newlines
            disable=options["no_progress"],
            leave=False,
        )

        def progress(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        try:
            if path.is_dir():
                result = imports.import_folder(
                    project=project,
                    path=path,
                    fmt=fmt,
                    text_field=options["text_field"],
                    progress=progress,
                    skip_duplicates=options["skip_duplicates"],
                )
            else:
                with path.open("rb") as fileobj:
                    result = imports.import_file(
                        project=project,
                        fileobj=fileobj,
                        filename=path.name,
                        fmt=fmt,
                        text_field=options["text_field"],
                        id_field=options["id_field"],
                        progress=progress,
                        skip_duplicates=options["skip_duplicates"],
                    )
        except imports.ImportFailed as exc:
            bar.close()
            self.fail(exc, path)
        bar.close()
        for message in result.duplicate_messages:
            self.stdout.write(self.style.WARNING(message))
        self.stdout.write(self.style.SUCCESS(result.summary(into=project.name)))

    def fail(self, exc: imports.ImportFailed, path: Path) -> NoReturn:
        for message in exc.messages:
            self.stderr.write(self.style.ERROR(message))
        raise CommandError(
            f"Nothing was imported: {exc.total:,} problem{'s' if exc.total != 1 else ''} "
            f"in {path.name}."
        )

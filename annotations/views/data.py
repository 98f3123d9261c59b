"""Getting data in and out of a project: the upload page for project admins and the label
exports for reviewers and admins."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods

from annotations import access, exports, imports
from annotations.imports.uploads import upload_refusal
from annotations.models import Project


class ImportForm(forms.Form):
    file = forms.FileField(label="File")
    format = forms.ChoiceField(
        choices=[("", "Detect from the content")], required=False, label="Format"
    )
    text_field = forms.CharField(
        max_length=255,
        initial="text",
        required=False,
        label="Text column / field",
        help_text='The column (CSV) or field (JSON) that holds the text; default "text".',
    )
    id_field = forms.CharField(
        max_length=255,
        required=False,
        label="Id column / field",
        help_text='Optional. Default: "id" when the file has one, else file name and line.',
    )
    skip_duplicates = forms.BooleanField(
        required=False,
        label="Skip exact duplicates",
        help_text="Leave out texts (case, Unicode forms and spacing aside) or images (byte for "
        "byte) already in the project or earlier in the file. Either way they are listed.",
    )

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if project.item_kind == Project.ItemKind.IMAGE:
            choices = [
                ("zip", "Zip archive of images"),
                ("folders", "Zip archive with a folder per class"),
                ("coco", "Zip archive of images with a COCO file"),
            ]
            accept = ".zip"
            for name in ("text_field", "id_field"):
                del self.fields[name]
        else:
            choices = [
                ("csv", "CSV"),
                ("json", "JSON (array of objects)"),
                ("jsonl", "JSONL"),
                ("labelstudio", "Label Studio tasks (JSON export)"),
                ("doccano", "doccano text classification (JSONL)"),
                ("hf", "Hugging Face dataset (Parquet file, zipped folder, or JSONL)"),
            ]
            accept = ".csv,.json,.jsonl,.ndjson,.parquet,.zip"
        self.fields["file"].widget.attrs["accept"] = accept
        self.fields["format"].choices = [*self.fields["format"].choices, *choices]


@require_http_methods(["GET", "POST"])
@login_required
def project_import(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
    # Step 2 of setting up a new project (`views.new_project`): then on to its members.
    setup = request.GET.get("setup") == "1"
    errors: list[str] = []
    status = 200
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES, project=project)
        if refusal := upload_refusal(request):
            errors = [refusal]
            status = 413
        elif form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = imports.import_file(
                    project=project,
                    fileobj=upload,
                    filename=upload.name or "upload",
                    fmt=form.cleaned_data["format"] or None,
                    text_field=form.cleaned_data.get("text_field") or "text",
                    id_field=form.cleaned_data.get("id_field") or None,
                    skip_duplicates=form.cleaned_data["skip_duplicates"],
                )
            except imports.ImportFailed as exc:
                errors = exc.messages
                status = 422
            else:
                if not result.duplicate_count:
                    messages.success(request, result.summary())
                    if setup:
                        return redirect(reverse("project_members", args=[project.pk]) + "?setup=1")
                    return redirect("project_detail", pk=project.pk)
                # The duplicates are listed on the page, next to the form for the next file.
                return render(
                    request,
                    "annotations/import.html",
                    {
                        "project": project,
                        "form": ImportForm(project=project),
                        "result": result,
                        "setup": setup,
                    },
                )
        else:
            status = 400
    else:
        form = ImportForm(project=project)
    return render(
        request,
        "annotations/import.html",
        {"project": project, "form": form, "import_errors": errors, "setup": setup},
        status=status,
    )


@require_GET
@login_required
def project_export_jsonl(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    return _export(request, pk, "jsonl")


@require_GET
@login_required
def project_export_csv(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    return _export(request, pk, "csv")


#: Live exports that are folders, downloaded as a zip.
FOLDER_FORMATS = ("hf", "folders")


@require_GET
@login_required
def project_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The other tools' formats: Label Studio, doccano (streamed), and a Hugging Face folder or
    (images) a folder per class, as a zip: `/projects/<pk>/export.<fmt>`."""
    return export_response(request, pk, fmt)


def export_response(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The whole project in `fmt` (any of `exports.FORMATS` or FOLDER_FORMATS) for the page
    and the API alike: streamed, or a zip for the folder formats."""
    if fmt in FOLDER_FORMATS:
        return _export_folder(request, pk, fmt)
    return _export(request, pk, fmt)


def _export_folder(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    # Imported here: the writers load pyarrow, which a web process loads only to export.
    from annotations.exporters.hf import live_folder_export
    from annotations.views.versions import zip_folder
    from curation.version_rows import ExportError

    project = access.get_project_for_user(request.user, pk, allowed=access.EXPORT)
    if fmt == "folders" and project.item_kind != Project.ItemKind.IMAGE:
        raise Http404("The folders export is for image projects.")
    stem = exports.export_filename(project, fmt).replace("-labels.", "-")
    workdir = Path(tempfile.mkdtemp(prefix="live-export-"))
    try:
        try:
            live_folder_export(project, fmt, workdir / stem, media_root=Path(settings.MEDIA_ROOT))
        except ExportError as exc:
            return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
        archive = workdir / f"{stem}.zip"
        zip_folder(workdir / stem, archive)
        handle = open(archive, "rb")  # noqa: SIM115 - FileResponse closes it
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the open handle keeps the zip readable
    return FileResponse(handle, as_attachment=True, filename=archive.name)


def _export(request: HttpRequest, pk: int, fmt: str) -> StreamingHttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.EXPORT)
    if fmt not in exports.formats_for(project):
        raise Http404("No such export format for this project.")
    return stream_export(request, project, fmt, exports.export_chunks(project, fmt))


def stream_export(
    request: HttpRequest,
    project: Project,
    fmt: str,
    chunks: Iterator[str],
    *,
    filename: str | None = None,
) -> StreamingHttpResponse:
    """A download of export `chunks` (`exports.export_chunks`: the project's, or a selection's)."""
    # Under ASGI a plain generator would be read whole into memory before sending; hand the
    # server an async iterator that pulls chunks in the request's database thread instead.
    content = _pull_async(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=exports.FORMATS[fmt])
    response["Content-Disposition"] = content_disposition_header(
        True, filename or exports.export_filename(project, fmt)
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


async def _pull_async(chunks: Iterator[str]) -> AsyncIterator[str]:
    """Yield the chunks of a sync generator, running it in the request's sync thread (where
    its database connection lives) one chunk per hop; closes it if the client goes away."""
    take = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await take(chunks, None)) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()

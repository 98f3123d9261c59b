"""Dataset versions on the pages: the list (with its model metrics and a form to save one),
one version's counts, downloads in every format, and the diff of two versions. Reviewers and
project admins; the services are those of the API and the commands."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods

from annotations import access
from annotations.models import Item, Project
from annotations.views.data import stream_export
from curation.dataset_versions import (
    VersionError,
    VersionFileError,
    version_named,
    version_open,
    version_request,
)
from curation.splits import SPLITS
from curation.version_diff import CHANGES, diff_of
from curation.version_listing import versions_listed
from curation.version_models import DatasetVersion

PAGE_SIZE = 100
#: What a version downloads as (`curation.version_exports`).
EXPORT_FORMATS = ("jsonl", "csv", "hf")
IMAGE_EXPORT_FORMATS = (*EXPORT_FORMATS, "folders")


def _formats(project: Project) -> tuple[str, ...]:
    return IMAGE_EXPORT_FORMATS if project.item_kind == Project.ItemKind.IMAGE else EXPORT_FORMATS


def _project(request: HttpRequest, pk: int) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=access.REVIEW)


def version_or_404(project: Project, name: str) -> DatasetVersion:
    try:
        return version_named(project, name)
    except VersionError:
        raise Http404("No such version.") from None


@require_http_methods(["GET", "POST"])
@login_required
def project_versions(request: HttpRequest, pk: int) -> HttpResponse:
    """The versions, newest first; POST saves a new one (a worker writes it)."""
    project = _project(request, pk)
    error = ""
    if request.method == "POST":
        try:
            version = version_request(
                project,
                name=request.POST.get("name", ""),
                note=request.POST.get("note", "")[:2000],
                author=request.user,
            )
        except VersionError as exc:
            error = str(exc)
        else:
            messages.success(request, f"Version {version.name} is being written.")
            return redirect("project_versions", pk=project.pk)
    listed = versions_listed(project)
    context = {
        "project": project,
        "versions": listed,
        "pending": any(v["pending"] for v in listed),
        "ready_count": sum(v["ready"] for v in listed),
        "error": error,
        "values": request.POST if error else {},
        "changes": CHANGES,
        "formats": _formats(project),
    }
    template = "annotations/_versions_table.html" if request.htmx else "annotations/versions.html"
    return render(request, template, context, status=400 if error else 200)


@require_GET
@login_required
def project_version_detail(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    project = _project(request, pk)
    version = version_or_404(project, name)
    listed = {v["name"]: v for v in versions_listed(project)}
    row = listed.get(version.name) or {}
    f1 = (row.get("metrics") or {}).get("f1_per_class") or {}
    per_split = version.split_counts or {}
    class_rows = [
        {
            "name": name,
            "all": count,
            **{s: (per_split.get(s) or {}).get("classes", {}).get(name, 0) for s in SPLITS},
            "f1": f1.get(name),
        }
        for name, count in (version.class_counts or {}).items()
    ]
    return render(
        request,
        "annotations/version_detail.html",
        {
            "project": project,
            "version": version,
            "row": row,
            "class_rows": class_rows,
            "formats": _formats(project),
        },
    )


@require_GET
@login_required
def project_versions_diff(request: HttpRequest, pk: int) -> HttpResponse:
    """The diff of `?from=` to `?to=`, its changes filtered by `change` and `pair` (from→to),
    a page of PAGE_SIZE at a time (`page`)."""
    project = _project(request, pk)
    if not (request.GET.get("from") and request.GET.get("to")):
        messages.error(request, "Choose two versions to compare.")
        return redirect("project_versions", pk=project.pk)
    a = version_or_404(project, request.GET["from"])
    b = version_or_404(project, request.GET["to"])
    try:
        diff = diff_of(a, b)
    except (VersionError, VersionFileError) as exc:
        return render(
            request,
            "annotations/versions_diff.html",
            {"project": project, "a": a, "b": b, "error": str(exc)},
            status=409,
        )
    change = request.GET.get("change", "")
    pair = request.GET.get("pair", "")
    changes = diff["changes"]
    if change in CHANGES:
        changes = [c for c in changes if c["change"] == change]
    if "→" in pair:
        before, after = pair.split("→", 1)
        changes = [c for c in changes if c["from"] == before and c["to"] == after]
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page = 1
    start = (page - 1) * PAGE_SIZE
    shown = changes[start : start + PAGE_SIZE]
    existing = set(
        Item.objects.filter(project=project, pk__in=[c["item_id"] for c in shown]).values_list(
            "pk", flat=True
        )
    )
    base = reverse("project_versions_diff", args=[project.pk])
    query = request.GET.copy()
    query.pop("page", None)

    def page_url(n: int) -> str:
        query["page"] = str(n)
        return f"{base}?{query.urlencode()}"

    return render(
        request,
        "annotations/versions_diff.html",
        {
            "project": project,
            "a": a,
            "b": b,
            "diff": diff,
            "changes": [c | {"exists": c["item_id"] in existing} for c in shown],
            "matching": len(changes),
            "change": change,
            "pair": pair,
            "kinds": CHANGES,
            "first_shown": start + 1 if shown else 0,
            "last_shown": start + len(shown),
            "previous_url": page_url(page - 1) if page > 1 else "",
            "next_url": page_url(page + 1) if start + PAGE_SIZE < len(changes) else "",
            "base_url": f"{base}?{urlencode({'from': a.name, 'to': b.name})}",
        },
    )


@require_GET
@login_required
def project_version_download(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    """A ready version as `?format=` jsonl or csv (streamed), or hf or folders (a zip). A
    version file that fails its checksum is refused with 409, never served."""
    project = _project(request, pk)
    version = version_or_404(project, name)
    fmt = request.GET.get("format", "jsonl")
    if fmt not in _formats(project):
        return HttpResponseBadRequest(
            f"format: one of {', '.join(_formats(project))} for this project."
        )
    try:
        return version_download(request, version, fmt)
    except (VersionError, VersionFileError) as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")


def version_download(request: HttpRequest, version: DatasetVersion, fmt: str) -> HttpResponse:
    """The download of `version` in `fmt` (page and API): jsonl and csv stream from the
    checked file; hf and folders are written to a temporary folder and sent as one zip with
    fixed dates, so the same version downloads as the same bytes."""
    # pyarrow (the hf writer) imports numpy: loaded only by a process that exports.
    from curation import version_exports

    header, rows = version_open(version)
    stem = f"{slugify(version.project.name)[:60] or 'project'}-{version.project_id}-{version.name}"
    if fmt in ("jsonl", "csv"):
        chunks = version_exports.version_export_stream(header, rows, fmt)
        return stream_export(request, version.project, fmt, chunks, filename=f"{stem}.{fmt}")
    workdir = Path(tempfile.mkdtemp(prefix="version-export-"))
    try:
        folder = workdir / stem
        version_exports.version_export(
            header,
            rows,
            fmt,
            folder,
            media_root=Path(settings.MEDIA_ROOT),
            version_name=version.name,
            content_hash=version.content_hash,
        )
        archive = workdir / f"{stem}-{fmt}.zip"
        zip_folder(folder, archive)
        handle = open(archive, "rb")  # noqa: SIM115 - FileResponse closes it
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the open handle keeps the zip readable
    return FileResponse(handle, as_attachment=True, filename=archive.name)


def zip_folder(folder: Path, archive: Path) -> None:
    """`folder` as a zip of its files under the folder's name, in name order, stored (parquet
    and images are compressed already) with a fixed date: the same files, the same bytes."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}")
            info.date_time = (1980, 1, 1, 0, 0, 0)
            info.external_attr = 0o644 << 16
            with open(path, "rb") as source, out.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)

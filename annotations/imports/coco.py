"""Labelled images: a folder per class, or a COCO file, in a folder or a zip archive.

- `folders`: `<class>/<image>` (the folder's name is the class), or a dataset version's
  folders export (`<split>/<class folder>/<image>` with its `labels.csv`, which gives each
  file's class and external id back: a multi-label image that sits in several class folders is
  one item). An image at the top, outside any class folder, is imported without a label.
- `coco`: a JSON file with `images` (`id`, `file_name`), `categories` (`id`, `name`) and
  `annotations` (`image_id`, `category_id`), as COCO and the tools that export it write them;
  each image's categories are its labels (one per image in a single-label project). The image
  files are found by `file_name` next to the JSON file, in an `images/` folder, or by their
  name anywhere in the archive. The image's `id` and other fields are kept as metadata.

The labels are answers of one source per format (accounts `folders-import`, `coco-import`;
see `annotations.answer_imports`). Images are verified as any image import
(`annotations.imports.images`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

from annotations.answer_imports import AnswerImport, AnswerIn, ExternalAnnotator
from annotations.imports.errors import ErrorList, ImportFailed
from annotations.imports.formats import ImportResult, Progress, require_kind
from annotations.imports.images import (
    _ImageSource,
    _ReadError,
    _store_images,
    folder_sources,
    open_archive_sources,
)
from annotations.imports.records import RawAnswer, Record, RecordCheck
from annotations.imports.text import _bad_strings, _refuse_constant
from annotations.models import Item, Project
from annotations.preannotations import PreAnnotationError, predictions_save, vectors_save

SPLIT_FOLDERS = ("train", "validation", "test")
#: The largest COCO JSON file read (it is parsed whole).
MAX_COCO_BYTES = 512 * 1024 * 1024


def import_labelled_images(
    *,
    project: Project,
    fileobj: IO[bytes],
    filename: str,
    fmt: str,
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """A zip archive with a folder per class (`folders`) or images and a COCO file (`coco`)."""
    name = PurePath(filename).name
    require_kind(project, Project.ItemKind.IMAGE, name)
    with open_archive_sources(fileobj, name) as sources:
        return _labelled(project, name, sources, fmt, progress, skip_duplicates)


def import_labelled_folder(
    *,
    project: Project,
    path: Path,
    fmt: str,
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """A folder with a folder per class (`folders`) or images and a COCO file (`coco`)."""
    name = path.name or str(path)
    require_kind(project, Project.ItemKind.IMAGE, name)
    return _labelled(project, name, folder_sources(path), fmt, progress, skip_duplicates)


def _labelled(
    project: Project,
    name: str,
    sources: list[_ImageSource],
    fmt: str,
    progress: Progress | None,
    skip_duplicates: bool,
) -> ImportResult:
    errors = ErrorList()
    if fmt == "coco":
        images, labels, metadata = _coco(sources, name, errors)
        source = ExternalAnnotator("coco", "import")
    else:
        images, labels, metadata = _folders(sources, name, errors)
        source = ExternalAnnotator("folders", "import")
    records = {
        image.path: Record(
            where=image.path,
            external_id=image.path,
            text=None,
            metadata=metadata.get(image.path, {}),
            answers=[RawAnswer("labels", source, labels[image.path])]
            if labels.get(image.path)
            else [],
        )
        for image in images
    }
    return store_labelled_images(
        project=project,
        name=name,
        images=images,
        records=records,
        errors=errors,
        progress=progress,
        skip_duplicates=skip_duplicates,
    )


def store_labelled_images(
    *,
    project: Project,
    name: str,
    images: list[_ImageSource],
    records: dict[str, Record],
    errors: ErrorList,
    default_model: str = "imported",
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """Images (each `_ImageSource.path` its external id) with their records' metadata,
    answers, predictions and vectors, checked first and stored with the images, all or
    nothing."""
    check = RecordCheck(project, name, errors, default_model=default_model)
    checked: dict[str, tuple[list[RawAnswer], list, bytes | None]] = {}
    for external_id, record in records.items():
        answers = []
        for answer in record.answers:
            at = f"{record.where}, {answer.where}" if answer.where != "labels" else record.where
            chosen = check.labels(answer.labels, skipped=answer.skipped, at=at)
            if chosen is not None:
                answer.labels = chosen
                answers.append(answer)
        predictions = [
            p
            for where, raw in record.predictions
            if (p := check.prediction(raw, f"{record.where}, {where}", default_model))
        ]
        vector = None if record.vector is None else check.vector(record.vector, record.where)
        checked[external_id] = (answers, predictions, vector)
    if errors:
        errors.fail()
    stored = AnswerImport(project)

    def on_batch(items: list[Item]) -> None:
        with_metadata = []
        given, predictions, vectors = [], [], []
        for item in items:
            record = records.get(item.external_id)
            if record is None:
                continue
            if record.metadata:
                item.metadata = record.metadata
                with_metadata.append(item)
            answers, found, vector = checked[item.external_id]
            given += [
                AnswerIn(
                    item.pk,
                    a.annotator,
                    a.labels,
                    a.skipped,
                    a.time_spent_ms,
                    a.created_at,
                    a.updated_at,
                )
                for a in answers
            ]
            predictions += [(item.pk, p) for p in found]
            if vector is not None:
                vectors.append((item.pk, vector))
        Item.objects.bulk_update(with_metadata, ["metadata"])
        stored.add(given)
        predictions_save(project, predictions)
        try:
            vectors_save(project, vectors)
        except PreAnnotationError as exc:  # another import fixed another length meanwhile
            raise ImportFailed([f"{name}: {exc}"]) from None

    return _store_images(
        project,
        name,
        images,
        progress,
        skip_duplicates,
        on_batch=on_batch,
        on_done=stored.finish,
    )


def _folders(
    sources: list[_ImageSource], name: str, errors: ErrorList
) -> tuple[list[_ImageSource], dict[str, list[str]], dict[str, dict]]:
    """Images and their class folders; a version export's `labels.csv` when there is one."""
    by_path = {s.path: s for s in sources}
    listing = by_path.pop("labels.csv", None)
    if listing is not None:
        return _version_layout(by_path, listing, name, errors)
    labels: dict[str, list[str]] = {}
    for source in by_path.values():
        parts = source.path.split("/")
        if len(parts) > 2:
            errors.add(
                f"{name}: {source.path} is nested too deeply: put each image in the folder "
                "named after its class (<class>/<image>)"
            )
        elif len(parts) == 2:
            labels[source.path] = [parts[0]]
    return list(by_path.values()), labels, {}


def _version_layout(
    by_path: dict[str, _ImageSource], listing: _ImageSource, name: str, errors: ErrorList
) -> tuple[list[_ImageSource], dict[str, list[str]], dict[str, dict]]:
    try:
        text = listing.read(64 * 1024 * 1024).decode("utf-8-sig")
    except (_ReadError, UnicodeDecodeError) as exc:
        raise ImportFailed([f"{name}: labels.csv cannot be read ({exc})."]) from None
    rows = list(csv.DictReader(io.StringIO(text)))
    wanted = {"split", "class", "file", "external_id"}
    if not rows or not wanted <= set(rows[0]):
        raise ImportFailed([f"{name}: labels.csv needs the columns {', '.join(sorted(wanted))}."])
    images: dict[str, _ImageSource] = {}
    labels: dict[str, list[str]] = defaultdict(list)
    for number, row in enumerate(rows, 2):
        source = by_path.get(row["file"])
        if source is None:
            errors.add(f"{name} labels.csv line {number}: no file {row['file']!r} in the archive")
            continue
        external_id = row["external_id"]
        if external_id not in images:
            images[external_id] = _ImageSource(external_id, source.size, source.read)
        labels[external_id].append(row["class"])
    return list(images.values()), dict(labels), {}


def _coco(
    sources: list[_ImageSource], name: str, errors: ErrorList
) -> tuple[list[_ImageSource], dict[str, list[str]], dict[str, dict]]:
    files = [s for s in sources if s.path.lower().endswith(".json")]
    found = []
    for file in files:
        data = _json(file, name)
        if isinstance(data, dict) and "images" in data and "categories" in data:
            found.append((file, data))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ImportFailed(
            [f"{name}: {what} COCO files (JSON with images and categories); give exactly one."]
        )
    file, data = found[0]
    coco_name = f"{name} {file.path}"
    base = PurePosixPath(file.path).parent
    images_by_path = {s.path: s for s in sources if s is not file and not s.path.endswith(".json")}
    by_basename: dict[str, list[_ImageSource]] = defaultdict(list)
    for s in images_by_path.values():
        by_basename[PurePosixPath(s.path).name].append(s)
    categories = _categories(data.get("categories"), coco_name, errors)
    image_ids: dict[Any, str] = {}
    images: list[_ImageSource] = []
    metadata: dict[str, dict] = {}
    for index, image in enumerate(_list(data, "images", coco_name), 1):
        where = f"{coco_name}: images[{index - 1}]"
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            errors.add(f"{where}: expected an object with a file_name")
            continue
        file_name = image["file_name"].replace("\\", "/")
        source = _find(file_name, base, images_by_path, by_basename)
        if source is None:
            errors.add(f"{where}: image file {file_name!r} is not in the upload")
            continue
        if image.get("id") in image_ids:
            errors.add(f"{where}: image id {image.get('id')!r} appears twice")
            continue
        image_ids[image.get("id")] = file_name
        images.append(_ImageSource(file_name, source.size, source.read))
        extra = {k: v for k, v in image.items() if k not in ("id", "file_name", "width", "height")}
        if problem := _bad_strings(extra):
            errors.add(f"{where}: {problem}")
            continue
        metadata[file_name] = {"coco_id": image.get("id"), **extra}
    labels: dict[str, list[str]] = defaultdict(list)
    for index, annotation in enumerate(_list(data, "annotations", coco_name)):
        where = f"{coco_name}: annotations[{index}]"
        if not isinstance(annotation, dict):
            errors.add(f"{where}: expected an object")
            continue
        file_name = image_ids.get(annotation.get("image_id"))
        category = categories.get(annotation.get("category_id"))
        if file_name is None:
            errors.add(f"{where}: image_id {annotation.get('image_id')!r} is not in images")
        elif category is None:
            errors.add(f"{where}: category_id {annotation.get('category_id')!r} is not a category")
        elif category not in labels[file_name]:
            labels[file_name].append(category)
    return images, dict(labels), metadata


def _json(source: _ImageSource, name: str) -> Any:
    if source.size > MAX_COCO_BYTES:
        return None
    try:
        return json.loads(source.read(MAX_COCO_BYTES + 1), parse_constant=_refuse_constant)
    except _ReadError as exc:
        raise ImportFailed([f"{name}: {source.path} {exc}"]) from None
    except (ValueError, RecursionError) as exc:
        raise ImportFailed([f"{name} {source.path}: malformed JSON ({exc})"]) from None


def _list(data: dict, key: str, where: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ImportFailed([f"{where}: {key!r} must be a list"])
    return value


def _categories(raw: Any, where: str, errors: ErrorList) -> dict[Any, str]:
    if not isinstance(raw, list):
        raise ImportFailed([f"{where}: 'categories' must be a list"])
    found: dict[Any, str] = {}
    for index, category in enumerate(raw):
        if not isinstance(category, dict) or not isinstance(category.get("name"), str):
            errors.add(f"{where}: categories[{index}]: expected an object with a name")
            continue
        found[category.get("id")] = category["name"]
    return found


def _find(
    file_name: str,
    base: PurePosixPath,
    by_path: dict[str, _ImageSource],
    by_basename: dict[str, list[_ImageSource]],
) -> _ImageSource | None:
    """The upload's file for a COCO `file_name`: next to the JSON, in images/, or by name."""
    clean = os.path.normpath(file_name).replace(os.sep, "/").lstrip("/")
    for candidate in (base / clean, base / "images" / clean, PurePosixPath(clean)):
        path = candidate.as_posix().removeprefix("./")
        if path in by_path:
            return by_path[path]
    same = by_basename.get(PurePosixPath(clean).name, [])
    return same[0] if len(same) == 1 else None

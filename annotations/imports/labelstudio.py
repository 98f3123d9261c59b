"""Label Studio tasks: the JSON export of a project (an array of tasks, read incrementally) or
the same tasks one per line.

A task is `{"id", "data": {"text": …}, "meta", "annotations": […], "predictions": […]}`. The
text is `data.text` (or the field named by `text_field`), every other `data` field is kept as
metadata, and a non-empty task `meta` as the metadata key "meta". The task id becomes the item's
external id (`meta.external_id` when an export of ours put a non-numeric id there).

For classification (`choices`) projects, each annotation's `result[].value.choices` are an
answer by its `completed_by` annotator (an id, or `{"id", "email", …}` when exported with
annotator details), with `created_at`, `updated_at` and `lead_time`; a cancelled (skipped)
annotation is a skip. Predictions (`model_version`, `score`, `result`) become predictions
of that model, never answers. `data.vector`, a list of numbers, is the item's vector.

Image projects: Label Studio's `data.image` is a URL, which is never fetched; upload a zip (or
give a folder) holding the tasks' JSON file and the image files. Each task's image is the file
named as the URL's last part, or as it without the prefix Label Studio adds to uploads
(`/data/upload/3/5e1f9c2a-cat.png` → `5e1f9c2a-cat.png` or `cat.png`), anywhere in the upload.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import PurePath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotations.answer_imports import ExternalAnnotator
from annotations.imports.errors import ErrorList, ImportFailed
from annotations.imports.formats import ImportResult, Progress
from annotations.imports.records import RawAnswer, Record, store_text_records
from annotations.imports.text import json_objects

TOOL = "labelstudio"
DEFAULT_MODEL = "labelstudio"


class TaskError(ValueError):
    """A task that cannot be read; the message says where inside it and why."""


def import_labelstudio(
    *,
    project,
    fileobj: IO[bytes],
    filename: str,
    fmt: str = "json",
    text_field: str = "text",
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """Import Label Studio tasks with their annotations and predictions (see the module)."""
    name = PurePath(filename).name
    errors = ErrorList()
    text_field = (text_field or "text").strip()

    def records():
        for index, (where, task) in enumerate(
            json_objects(fileobj, name, fmt, errors, progress), 1
        ):
            label = where.replace("record", "task")  # "task 3" in a JSON array, else "line 3"
            if _is_id(task.get("id")):
                label += f" (id {task['id']})"
            try:
                yield task_record(task, where=label, auto_id=f"{name}:{index}", text=text_field)
            except TaskError as exc:
                errors.add(f"{name} {label}: {exc}")

    return store_text_records(
        project=project,
        records=records(),
        name=name,
        errors=errors,
        default_model=DEFAULT_MODEL,
        skip_duplicates=skip_duplicates,
    )


def import_labelstudio_images(
    *,
    project,
    sources: list,
    name: str,
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """Image tasks and their image files, from the files of a zip archive or a folder
    (`annotations.imports.images._ImageSource`s)."""
    from annotations.imports.coco import store_labelled_images
    from annotations.imports.images import _ImageSource

    errors = ErrorList()
    task_files = [s for s in sources if s.path.lower().endswith((".json", ".jsonl"))]
    files = [s for s in sources if s not in task_files]
    by_name: dict[str, list] = {}
    for source in files:
        by_name.setdefault(PurePath(source.path).name, []).append(source)
    if not task_files:
        raise ImportFailed([f"{name}: no Label Studio tasks file (.json) in the upload."])
    images, records = [], {}
    for task_file in task_files:
        label = f"{name} {task_file.path}"
        with io.BytesIO(task_file.read(MAX_TASKS_BYTES)) as handle:
            fmt = "json" if handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[" else "jsonl"
            for index, (where, task) in enumerate(json_objects(handle, label, fmt, errors), 1):
                place = where.replace("record", "task")
                if _is_id(task.get("id")):
                    place += f" (id {task['id']})"
                try:
                    record = task_record(
                        task, where=place, auto_id=f"{task_file.path}:{index}", text="image"
                    )
                except TaskError as exc:
                    errors.add(f"{label} {place}: {exc}")
                    continue
                source = _image_file(record.text, by_name)
                if source is None:
                    errors.add(f"{label} {place}: no file for image {record.text!r} in the upload")
                    continue
                record.where = f"{task_file.path} {place}"
                images.append(_ImageSource(record.external_id, source.size, source.read))
                records[record.external_id] = record
    if errors:
        errors.fail()
    return store_labelled_images(
        project=project,
        name=name,
        images=images,
        records=records,
        errors=errors,
        default_model=DEFAULT_MODEL,
        progress=progress,
        skip_duplicates=skip_duplicates,
    )


#: The largest tasks file read from an archive (it is held in memory).
MAX_TASKS_BYTES = 256 * 1024 * 1024
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def _image_file(url: Any, by_name: dict[str, list]):
    """The upload's file for a task's `data.image` URL, by its name (see the module)."""
    if not isinstance(url, str) or not url.strip():
        return None
    last = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    for candidate in (last, _UPLOAD_PREFIX.sub("", last)):
        found = by_name.get(candidate, [])
        if len(found) == 1:
            return found[0]
    return None


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def task_record(task: dict, *, where: str, auto_id: str, text: str) -> Record:
    """One task as a record (raises TaskError, located inside the task)."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise TaskError('no "data" object: a Label Studio task holds its content in "data"')
    if text not in data:
        fields = ", ".join(repr(k) for k in data) or "(none)"
        raise TaskError(f"no field {text!r} in data; its fields are: {fields}")
    meta = task.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise TaskError('"meta" must be an object')
    external_id = auto_id
    if isinstance(meta, dict) and _is_id(meta.get("external_id")):
        external_id = str(meta["external_id"])
        meta = {k: v for k, v in meta.items() if k != "external_id"}
    elif _is_id(task.get("id")):
        external_id = str(task["id"])
    metadata = {k: v for k, v in data.items() if k not in (text, "vector")}
    if meta:
        if "meta" in metadata:
            raise TaskError('data has a field "meta", which would hide the task\'s "meta"')
        metadata["meta"] = meta
    answers_raw = task.get("annotations", task.get("completions", []))
    predictions_raw = task.get("predictions", [])
    for key, value in (("annotations", answers_raw), ("predictions", predictions_raw)):
        if not isinstance(value, list):
            raise TaskError(f'"{key}" must be a list')
    return Record(
        where=where,
        external_id=external_id,
        text=data[text],
        metadata=metadata,
        answers=[_answer(a, i) for i, a in enumerate(answers_raw, 1)],
        predictions=[
            (f"prediction {i}", _prediction(p, i)) for i, p in enumerate(predictions_raw, 1)
        ],
        vector=data.get("vector"),
    )


def _answer(raw: Any, index: int) -> RawAnswer:
    where = f"annotation {index}"
    if not isinstance(raw, dict):
        raise TaskError(f"{where} is not an object")
    skipped = raw.get("was_cancelled") is True
    labels = [] if skipped else choices(raw.get("result"), where)
    lead_time = raw.get("lead_time")
    if lead_time is not None and (
        isinstance(lead_time, bool) or not isinstance(lead_time, int | float) or lead_time < 0
    ):
        raise TaskError(f"{where}: lead_time must be a number of seconds, not {lead_time!r}")
    created = _time(raw.get("created_at"), f"{where}: created_at")
    return RawAnswer(
        where=where,
        annotator=_annotator(raw.get("completed_by"), where),
        labels=labels,
        skipped=skipped,
        time_spent_ms=round((lead_time or 0) * 1000),
        created_at=created,
        updated_at=_time(raw.get("updated_at"), f"{where}: updated_at") or created,
    )


def _prediction(raw: Any, index: int) -> dict:
    """A prediction in `parse_prediction`'s form."""
    where = f"prediction {index}"
    if not isinstance(raw, dict):
        raise TaskError(f"{where} is not an object")
    model = raw.get("model_version")
    if model is not None and not isinstance(model, str):
        model = str(model)
    form: dict[str, Any] = {"labels": choices(raw.get("result"), where)}
    if model and model.strip():
        form["model"] = model
    if raw.get("score") is not None:
        form["score"] = raw["score"]
    return form


def choices(result: Any, where: str) -> list[str]:
    """The chosen classes of an annotation's or prediction's `result`: its `choices` regions,
    all from one control (`from_name`)."""
    if result is None:
        return []
    if not isinstance(result, list):
        raise TaskError(f"{where}: result must be a list")
    names: list[str] = []
    controls: set[str] = set()
    for n, region in enumerate(result, 1):
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise TaskError(f"{where}, result {n}: expected an object with a value object")
        kind = region.get("type", "choices")
        value = region["value"]
        if kind != "choices" or not isinstance(value.get("choices"), list):
            raise TaskError(
                f"{where}, result {n}: a {kind!r} result; only classification (choices) "
                "results can be imported"
            )
        controls.add(str(region.get("from_name", "")))
        if len(controls) > 1:
            raise TaskError(
                f"{where}: choices from several controls ({', '.join(sorted(controls))}); "
                "a project has one set of classes"
            )
        for choice in value["choices"]:
            if not isinstance(choice, str):
                raise TaskError(f"{where}, result {n}: a choice must be a string")
            if choice not in names:
                names.append(choice)
    return names


def _annotator(raw: Any, where: str) -> ExternalAnnotator:
    """`completed_by`: a user id, or `{"id", "email", "first_name", "last_name"}`."""
    if raw is None:
        return ExternalAnnotator(TOOL, "unknown")
    if isinstance(raw, dict):
        email = raw.get("email") if isinstance(raw.get("email"), str) else ""
        key = raw.get("id")
        if not _is_id(key) and not email:
            raise TaskError(f"{where}: completed_by has neither an id nor an email")
        return ExternalAnnotator(
            TOOL,
            str(key) if _is_id(key) else email,
            email=email,
            first_name=str(raw.get("first_name") or ""),
            last_name=str(raw.get("last_name") or ""),
        )
    if _is_id(raw):
        return ExternalAnnotator(TOOL, str(raw))
    raise TaskError(f"{where}: completed_by must be a user id or an object, not {raw!r}")


def _time(raw: Any, what: str) -> dt.datetime | None:
    if raw is None:
        return None
    parsed = parse_datetime(raw) if isinstance(raw, str) else None
    if parsed is None:
        raise TaskError(f"{what} is not an ISO 8601 date and time: {raw!r}")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, dt.UTC)
    return parsed

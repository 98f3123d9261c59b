"""doccano text classification data: JSONL (or a JSON array) of `{"text": …, "label": […]}`,
as doccano imports and exports it, with `id` and any other field kept as metadata; or its CSV
(`text,label`, one class a row, an empty label for none).

doccano's export does not say who chose a label, so a non-empty `label` is one answer from a
single source, the account `doccano-import` (see `annotations.answer_imports`); an empty one
leaves the item unlabelled. A `prediction`/`predictions` field (ours, when present) holds model
predictions and `vector` the item's vector, as in our own JSON.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import IO, Any

from annotations.answer_imports import ExternalAnnotator
from annotations.imports.errors import ErrorList
from annotations.imports.formats import ImportResult, Progress
from annotations.imports.records import RawAnswer, Record, store_text_records
from annotations.imports.text import json_objects

SOURCE = ExternalAnnotator("doccano", "import")
DEFAULT_MODEL = "doccano"
LABEL_FIELDS = ("label", "labels")
#: Fields that are not metadata.
PREDICTION_FIELDS = ("prediction", "predictions")


class RecordError(ValueError):
    pass


def import_doccano(
    *,
    project,
    fileobj: IO[bytes],
    filename: str,
    fmt: str = "jsonl",
    text_field: str = "text",
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    name = PurePath(filename).name
    errors = ErrorList()
    text_field = (text_field or "text").strip()

    def records():
        for index, (where, fields) in enumerate(
            json_objects(fileobj, name, fmt, errors, progress, text_field=text_field), 1
        ):
            try:
                yield doccano_record(
                    fields, where=where, auto_id=f"{name}:{index}", text=text_field
                )
            except RecordError as exc:
                errors.add(f"{name} {where}: {exc}")

    return store_text_records(
        project=project,
        records=records(),
        name=name,
        errors=errors,
        default_model=DEFAULT_MODEL,
        skip_duplicates=skip_duplicates,
    )


def doccano_record(fields: dict[str, Any], *, where: str, auto_id: str, text: str) -> Record:
    if text not in fields:
        names = ", ".join(repr(k) for k in fields) or "(none)"
        raise RecordError(f"no field {text!r}; its fields are: {names}")
    present = [f for f in LABEL_FIELDS if f in fields]
    if len(present) > 1:
        raise RecordError('give "label" or "labels", not both')
    labels = fields[present[0]] if present else []
    if isinstance(labels, str):  # one class a row, as in doccano's CSV
        labels = [labels.strip()] if labels.strip() else []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise RecordError(
            f"field {present[0]!r} must be a list of class names (text classification); "
            "span labels are not imported"
        )
    raw_id = fields.get("id")
    external_id = auto_id
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise RecordError("field 'id' must be a string or an integer")
        external_id = str(raw_id).strip()
    skip = {text, "id", "vector", *LABEL_FIELDS, *PREDICTION_FIELDS}
    return Record(
        where=where,
        external_id=external_id,
        text=fields[text],
        metadata={k: v for k, v in fields.items() if k not in skip},
        answers=[RawAnswer("label", SOURCE, list(dict.fromkeys(labels)))] if labels else [],
        predictions=predictions_of(fields),
        vector=fields.get("vector"),
    )


def predictions_of(fields: dict[str, Any]) -> list[tuple[str, Any]]:
    """The `prediction` (one) or `predictions` (a list) of a JSON record, located."""
    out: list[tuple[str, Any]] = []
    if fields.get("prediction") is not None:
        out.append(("field 'prediction'", fields["prediction"]))
    many = fields.get("predictions")
    if many is not None:
        if not isinstance(many, list):
            raise RecordError("field 'predictions' must be a list of predictions")
        out.extend((f"prediction {i}", p) for i, p in enumerate(many, 1))
    return out

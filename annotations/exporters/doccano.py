"""A text project as doccano text classification JSONL: one `{"id", "text", …, "label": […]}`
a line, the metadata fields beside the text as doccano writes an example's meta, and `label`
the item's final label (or, while it has none, every class its answers chose: doccano keeps one
list of labels per example). doccano imports it as is, and so does this app.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.db.models import QuerySet

from annotations.exporters import answered_labels, items_with_extras, numeric_id
from annotations.exports import CHUNK_ITEMS
from annotations.models import Item, Project

#: Our fields that a metadata key of the same name would overwrite: such keys are left out.
RESERVED = ("id", "text", "label")


def doccano_chunks(
    project: Project, *, chunk_size: int = CHUNK_ITEMS, items: QuerySet[Item] | None = None
) -> Iterator[str]:
    classes = list(project.class_names())
    lines: list[str] = []
    for item, extras in items_with_extras(project, chunk_size=chunk_size, items=items):
        number = numeric_id(item.external_id)
        record: dict = {"id": number if number is not None else item.external_id}
        record["text"] = item.text
        metadata = item.metadata if isinstance(item.metadata, dict) else {}
        record.update((k, v) for k, v in metadata.items() if k not in RESERVED)
        record["label"] = answered_labels(item, classes)
        if extras.predictions:
            record["predictions"] = [
                {"model": p.model_name, "labels": p.labels, "score": p.score}
                | ({"scores": p.scores} if p.scores else {})
                for p in extras.predictions
            ]
        if extras.vector is not None:
            record["vector"] = extras.vector
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if len(lines) >= chunk_size:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)

"""A project as Label Studio tasks: one JSON array, as Label Studio's own JSON export writes it,
that Label Studio imports (with its labeling config's choices named as our classes) and that
this app imports back without loss.

Each task: `id` (the external id when it is a number, else the item's id, with the external id
in `meta.external_id`), `data` (`text`, or `image`, the item's image URL here; the metadata
fields; `vector`), `meta` (metadata key "meta"), `annotations` (each answer: `completed_by`
with the annotator's id, email and name, as Label Studio exports them with annotator details;
a `choices` result; `was_cancelled` for a skip; `lead_time` in seconds; `created_at`,
`updated_at`) and `predictions` (each model's `model_version`, `score` and `result`). The
classification control is `from_name` "label", `to_name` "text" or "image".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from annotations.answer_imports import external_id_of
from annotations.exporters import Extras, People, items_with_extras, numeric_id
from annotations.exports import CHUNK_ITEMS, ExportItem
from annotations.models import Item, Project

FROM_NAME = "label"
TOOL = "labelstudio"


def labelstudio_chunks(
    project: Project, *, chunk_size: int = CHUNK_ITEMS, items: QuerySet[Item] | None = None
) -> Iterator[str]:
    """The JSON array of tasks, in chunks of text."""
    people = People()
    to_name = "image" if project.item_kind == Project.ItemKind.IMAGE else "text"
    parts: list[str] = ["["]
    first = True
    for item, extras in items_with_extras(
        project, chunk_size=chunk_size, items=items, people=people
    ):
        task = task_of(project, item, extras, people, to_name)
        parts.append(("\n" if first else ",\n") + json.dumps(task, ensure_ascii=False))
        first = False
        if len(parts) >= chunk_size:
            yield "".join(parts)
            parts = []
    parts.append("\n]\n")
    yield "".join(parts)


def task_of(
    project: Project, item: ExportItem, extras: Extras, people: People, to_name: str
) -> dict[str, Any]:
    metadata = dict(item.metadata) if isinstance(item.metadata, dict) else {}
    meta = metadata.pop("meta", None)
    meta = dict(meta) if isinstance(meta, dict) else ({"meta": meta} if meta is not None else {})
    task_id = numeric_id(item.external_id)
    if task_id is None:
        task_id = item.id
        meta["external_id"] = item.external_id
    # An image is referred to by its URL here, as Label Studio refers to its uploads.
    image = to_name == "image"
    content = reverse("item_image", args=[project.pk, item.id]) if image else item.text
    data: dict[str, Any] = {to_name: content, **metadata}
    if extras.vector is not None:
        data["vector"] = extras.vector
    return {
        "id": task_id,
        "data": data,
        "meta": meta,
        "annotations": [
            {
                "id": a.id,
                "completed_by": _completed_by(people, a.annotator_id),
                "result": [] if a.skipped else [_choices(a.labels, to_name, f"a{a.id}")],
                "was_cancelled": a.skipped,
                "ground_truth": False,
                "created_at": _iso(a.created_at),
                "updated_at": _iso(a.updated_at),
                "lead_time": a.time_spent_ms / 1000,
                "task": task_id,
            }
            for a in item.answers
        ],
        "predictions": [
            {
                "model_version": p.model_name,
                "score": p.score,
                "result": [_choices(p.labels, to_name, f"p{p.pk}", origin="prediction")],
                "created_at": _iso(p.created_at),
                "updated_at": _iso(p.updated_at),
                "task": task_id,
            }
            for p in extras.predictions
        ],
    }


def _completed_by(people: People, user_id: int) -> dict[str, Any]:
    """The annotator as Label Studio's export "with annotator details" spells them; an account
    made by an import from Label Studio gets its id there back."""
    person = people[user_id]
    old = external_id_of(person.username, TOOL)
    return {
        "id": int(old) if old is not None and old.isdigit() else person.id,
        "email": person.email,
        "first_name": person.first_name,
        "last_name": person.last_name,
    }


def _choices(
    labels: list[str], to_name: str, region_id: str, *, origin: str = "manual"
) -> dict[str, Any]:
    return {
        "id": region_id,
        "from_name": FROM_NAME,
        "to_name": to_name,
        "type": "choices",
        "origin": origin,
        "value": {"choices": list(labels)},
    }


def _iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")

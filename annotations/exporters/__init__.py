"""Exports in other tools' formats: Label Studio tasks (`labelstudio`), doccano JSONL
(`doccano`) and a Hugging Face `datasets` folder of the live data (`hf`).

Each walks `annotations.exports.export_items` (items in id order, a chunk at a time, with their
answers and final label) and adds, per chunk, what our own exports leave out: the team's model
predictions, the items' vectors and who the annotators are (`chunk_extras`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from annotations.exports import CHUNK_ITEMS, ExportItem, export_items
from annotations.models import Item, ItemVector, PreAnnotation, Project
from annotations.preannotations import vector_values


@dataclass(frozen=True)
class Person:
    id: int
    username: str
    email: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class Extras:
    predictions: list[PreAnnotation]
    vector: list[float] | None


class People:
    """The annotators met so far, by user id (a project has few; each is read once)."""

    def __init__(self) -> None:
        self._known: dict[int, Person] = {}

    def load(self, ids: set[int]) -> None:
        missing = ids - set(self._known)
        if not missing:
            return
        User = get_user_model()
        for user in User.objects.filter(pk__in=missing):
            self._known[user.pk] = Person(
                user.pk,
                user.get_username(),
                getattr(user, User.get_email_field_name(), "") or "",
                getattr(user, "first_name", "") or "",
                getattr(user, "last_name", "") or "",
            )

    def __getitem__(self, user_id: int) -> Person:
        return self._known[user_id]


def items_with_extras(
    project: Project,
    *,
    chunk_size: int = CHUNK_ITEMS,
    items: QuerySet[Item] | None = None,
    people: People | None = None,
) -> Iterator[tuple[ExportItem, Extras]]:
    """`export_items` with each item's predictions and vector, two queries per chunk; the
    chunk's annotators are loaded into `people`."""
    walk = export_items(project, chunk_size=chunk_size, items=items)
    while chunk := list(islice(walk, chunk_size)):
        ids = [item.id for item in chunk]
        predictions: dict[int, list[PreAnnotation]] = {}
        for p in PreAnnotation.objects.filter(item_id__in=ids).order_by("item_id", "model_name"):
            predictions.setdefault(p.item_id, []).append(p)
        vectors: dict[int, Any] = dict(
            ItemVector.objects.filter(item_id__in=ids).values_list("item_id", "values")
        )
        if people is not None:
            people.load({a.annotator_id for item in chunk for a in item.answers})
        for item in chunk:
            raw = vectors.get(item.id)
            yield (
                item,
                Extras(predictions.get(item.id, []), None if raw is None else vector_values(raw)),
            )


def numeric_id(external_id: str) -> int | None:
    """The external id as an integer when it is one (other tools number their items)."""
    text = external_id.strip()
    if text.isascii() and text.isdigit() and len(text) < 19 and str(int(text)) == text:
        return int(text)
    return None


def answered_labels(item: ExportItem, classes: list[str]) -> list[str]:
    """The item's final label, else (still waiting for answers, or a tie) every class its
    answers chose, in schema order: what a tool with one label list per item can hold."""
    if item.gold is not None and item.gold.labels:
        return list(item.gold.labels)
    chosen = {name for a in item.answers if not a.skipped for name in a.labels}
    return [name for name in classes if name in chosen]

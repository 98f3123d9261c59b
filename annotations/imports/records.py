"""Items that arrive with more than their text: answers made in another tool, a team's model
predictions and vectors. Label Studio, doccano and Hugging Face files are read into `Record`s
by their own modules; this one checks and stores them, all or nothing.

Each record's answers are checked against the project's classes, its predictions by
`annotations.preannotations.parse_prediction` and its vector by `parse_vector`, every problem
located ("tasks.json task 3 (id 17), annotation 2: …"). The items go in by batches as any text
import does (`insert_text_items`); the answers through `annotations.answer_imports` (an account
per external annotator, then the project's recount), the predictions and vectors through
`annotations.preannotations`. Nothing is stored as a human answer that was not one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError

from annotations.answer_imports import AnswerImport, AnswerIn, ExternalAnnotator
from annotations.content_hash import text_hash
from annotations.imports.errors import ErrorList, ImportFailed
from annotations.imports.formats import EXTERNAL_ID_MAX, DuplicateLog, ImportResult, require_kind
from annotations.imports.storage import (
    NewText,
    existing_hashes,
    existing_ids,
    insert_text_items,
    one_transaction,
    refresh_statistics_after,
)
from annotations.models import ClassNames, Item, Project
from annotations.preannotations import (
    PreAnnotationError,
    PredictionIn,
    parse_prediction,
    parse_vector,
    predictions_save,
    vectors_save,
)
from annotations.services import add_items_counted, validate_labels

BATCH = 2000


@dataclass
class RawAnswer:
    """An answer as a file gives it; `where` locates it ("annotation 2")."""

    where: str
    annotator: ExternalAnnotator
    labels: list[str]
    skipped: bool = False
    time_spent_ms: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class Record:
    """One item as read from a file: `where` locates it ("task 3 (id 17)", "line 4")."""

    where: str
    external_id: str
    text: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    answers: list[RawAnswer] = field(default_factory=list)
    # (where, the prediction's JSON form for `parse_prediction`)
    predictions: list[tuple[str, Any]] = field(default_factory=list)
    vector: Any = None  # None: the record has no vector


@dataclass
class _Checked:
    item: NewText
    where: str
    position: int  # the record's place in the file, to list duplicates in file order
    answers: list[RawAnswer]
    predictions: list[PredictionIn]
    vector: bytes | None


class RecordCheck:
    """Checks records against the project, adding located problems to `errors`."""

    def __init__(
        self, project: Project, name: str, errors: ErrorList, *, default_model: str
    ) -> None:
        self.project = project
        self.default_model = default_model
        self.name = name
        self.errors = errors
        self.classes: ClassNames = project.class_names()
        self.multi = project.is_multi_label
        self.dim = project.vector_dim

    def labels(self, labels: Any, *, skipped: bool, at: str) -> list[str] | None:
        try:
            return validate_labels(self.project, labels, skipped=skipped, names=self.classes)
        except ValidationError as exc:
            messages = exc.message_dict.get("labels") if hasattr(exc, "error_dict") else None
            self.errors.add(f"{self.name} {at}: {'; '.join(messages or exc.messages)}")
            return None

    def prediction(self, raw: Any, at: str, default_model: str) -> PredictionIn | None:
        try:
            return parse_prediction(
                raw, classes=self.classes, multi_label=self.multi, default_model=default_model
            )
        except PreAnnotationError as exc:
            self.errors.add(f"{self.name} {at}: {exc}")
            return None

    def vector(self, raw: Any, at: str) -> bytes | None:
        try:
            values = parse_vector(raw, dim=self.dim)
        except PreAnnotationError as exc:
            self.errors.add(f"{self.name} {at}: field 'vector': {exc}")
            return None
        if self.dim is None:
            self.dim = len(values) // 4  # every later vector of the file must match
        return values


def store_text_records(
    *,
    project: Project,
    records: Iterable[Record],
    name: str,
    errors: ErrorList,
    default_model: str,
    skip_duplicates: bool = False,
    report: Callable[[], None] | None = None,
) -> ImportResult:
    """Check and store text records, all or nothing: raise ImportFailed with every problem found
    (which rolls back what was inserted)."""
    require_kind(project, Project.ItemKind.TEXT, name)
    check = RecordCheck(project, name, errors, default_model=default_model)
    duplicates = DuplicateLog(skip=skip_duplicates)
    with one_transaction(name, "ids"):
        answers = AnswerImport(project)
        created = 0
        seen: dict[str, str] = {}
        contents: dict[int, str] = {}
        check_db = Item.objects.filter(project=project).exists()
        batch: list[_Checked] = []
        any_record = False
        for position, record in enumerate(records, 1):
            any_record = True
            checked = _check(record, check, seen, position)
            if checked is None:
                continue
            content_hash = text_hash(checked.item.text)
            first_at = contents.get(content_hash)
            if first_at is not None:
                duplicates.add(checked.where, first_at, position=position)
                if duplicates.skip:
                    continue
            else:
                contents[content_hash] = checked.where
            checked.item = checked.item._replace(content_hash=content_hash)
            batch.append(checked)
            if len(batch) >= BATCH:
                created += _flush(project, batch, check, check_db, duplicates, contents, answers)
                batch = []
                if report is not None:
                    report()
        created += _flush(project, batch, check, check_db, duplicates, contents, answers)
        if errors:
            errors.fail()
        if not any_record:
            raise ImportFailed([f"{name}: the file holds no items."])
        add_items_counted(project, created)
        answers.finish()
        refresh_statistics_after(created)
    return duplicates.result(created=created, source=name)


def _check(
    record: Record, check: RecordCheck, seen: dict[str, str], position: int
) -> _Checked | None:
    errors, name = check.errors, check.name
    at = f"{name} {record.where}"
    before = errors.total
    text, external_id = record.text, record.external_id
    if not isinstance(text, str):
        errors.add(f"{at}: the text must be a string, not {type(text).__name__}")
    elif not text.strip():
        errors.add(f"{at}: the text is empty")
    elif "\x00" in text:
        errors.add(f"{at}: the text contains a NUL character")
    from annotations.imports.text import _bad_strings  # (text imports this module)

    if problem := _bad_strings(record.metadata):
        errors.add(f"{at}: {problem}")
    if not external_id.strip():
        errors.add(f"{at}: the id is empty")
    elif len(external_id) > EXTERNAL_ID_MAX:
        errors.add(f"{at}: the id is longer than {EXTERNAL_ID_MAX} characters")
    elif (earlier := seen.get(external_id)) is not None:
        errors.add(f"{at}: id {external_id!r} is also on {earlier}")
    else:
        seen[external_id] = record.where
    answers = []
    for answer in record.answers:
        labels = check.labels(
            answer.labels, skipped=answer.skipped, at=f"{record.where}, {answer.where}"
        )
        if labels is not None:
            answer.labels = labels
            answers.append(answer)
    by_annotator: dict[object, str] = {}
    for answer in answers:
        # Two ids with one email are one account here (`answer_imports`).
        who = answer.annotator.email.lower() or answer.annotator
        if (other := by_annotator.get(who)) is not None:
            errors.add(
                f"{at}: {answer.where} and {other} are both by {answer.annotator.tool} "
                f"annotator {answer.annotator.key!r}; one answer per annotator and item"
            )
        by_annotator[who] = answer.where
    predictions = []
    models: dict[str, str] = {}
    for where, raw in record.predictions:
        prediction = check.prediction(raw, f"{record.where}, {where}", check.default_model)
        if prediction is None:
            continue
        if (other := models.get(prediction.model_name)) is not None:
            errors.add(
                f"{at}: {where} and {other} are both from model {prediction.model_name!r}; "
                "one prediction per model and item"
            )
        models[prediction.model_name] = where
        predictions.append(prediction)
    vector = None if record.vector is None else check.vector(record.vector, record.where)
    if errors.total > before:
        return None
    return _Checked(
        NewText(external_id, text, record.metadata),
        record.where,
        position,
        answers,
        predictions,
        vector,
    )


def _flush(
    project: Project,
    batch: list[_Checked],
    check: RecordCheck,
    check_db: bool,
    duplicates: DuplicateLog,
    contents: dict[int, str],
    answers: AnswerImport,
) -> int:
    """Insert a batch with its answers, predictions and vectors (the recount that the answers
    need runs once, when every item is in)."""
    errors, name = check.errors, check.name
    if not batch:
        return 0
    taken = existing_ids(project, [c.item.external_id for c in batch]) if check_db else set()
    for c in batch:
        if c.item.external_id in taken:
            errors.add(f"{name} {c.where}: id {c.item.external_id!r} is already in the project")
    if errors:
        return 0
    if check_db:
        firsts = [c.item.content_hash for c in batch if contents[c.item.content_hash] == c.where]
        existing = existing_hashes(project, firsts)
        kept = []
        for c in batch:
            same = existing.get(c.item.content_hash)
            if same is not None and contents[c.item.content_hash] == c.where:
                duplicates.add(c.where, f"existing item {same!r}", position=c.position)
                if duplicates.skip:
                    continue
            kept.append(c)
        batch = kept
    insert_text_items(project, [c.item for c in batch])
    ids = dict(
        Item.objects.filter(
            project=project, external_id__in=[c.item.external_id for c in batch]
        ).values_list("external_id", "pk")
    )
    predictions: list[tuple[int, PredictionIn]] = []
    vectors: list[tuple[int, bytes]] = []
    given: list[AnswerIn] = []
    for c in batch:
        pk = ids[c.item.external_id]
        given.extend(
            AnswerIn(
                item_id=pk,
                annotator=a.annotator,
                labels=a.labels,
                skipped=a.skipped,
                time_spent_ms=a.time_spent_ms,
                created_at=a.created_at,
                updated_at=a.updated_at,
            )
            for a in c.answers
        )
        predictions.extend((pk, p) for p in c.predictions)
        if c.vector is not None:
            vectors.append((pk, c.vector))
    answers.add(given)
    predictions_save(project, predictions)
    try:
        vectors_save(project, vectors)
    except PreAnnotationError as exc:
        errors.add(f"{name}: {exc}")
    return len(batch)


DEFAULT_MODEL = "imported"


class Extras:
    """For our own JSON/JSONL import (`annotations.imports.text`): the predictions and vectors
    of the batch being read, by external id, stored once the batch's items are in."""

    def __init__(self) -> None:
        self.predictions: dict[str, list] = {}
        self.vectors: dict[str, bytes] = {}

    def take(self, item: NewText, where: str, check: RecordCheck) -> NewText:
        """The item without its prediction and vector fields, which are checked and kept."""
        metadata = item.metadata
        if not any(k in metadata for k in ("prediction", "predictions", "vector")):
            return item
        metadata = dict(metadata)
        raw = metadata.pop("prediction", None)
        many = metadata.pop("predictions", None)
        vector = metadata.pop("vector", None)
        found = [] if raw is None else [("field 'prediction'", raw)]
        if many is not None and not isinstance(many, list):
            check.errors.add(f"{check.name} {where}: field 'predictions' must be a list")
        elif many:
            found += [(f"prediction {i}", p) for i, p in enumerate(many, 1)]
        parsed = [check.prediction(p, f"{where}, {at}", check.default_model) for at, p in found]
        if parsed:
            self.predictions[item.external_id] = [p for p in parsed if p is not None]
        if vector is not None and (values := check.vector(vector, where)) is not None:
            self.vectors[item.external_id] = values
        return item._replace(metadata=metadata)

    def save(self, project: Project, batch: list[NewText], errors: ErrorList, name: str) -> None:
        if errors or not (self.predictions or self.vectors):
            self.predictions.clear()
            self.vectors.clear()
            return
        wanted = [i.external_id for i in batch]
        ids = dict(
            Item.objects.filter(project=project, external_id__in=wanted).values_list(
                "external_id", "pk"
            )
        )
        predictions_save(
            project,
            [(ids[e], p) for e, found in self.predictions.items() if e in ids for p in found],
        )
        try:
            vectors_save(project, [(ids[e], v) for e, v in self.vectors.items() if e in ids])
        except PreAnnotationError as exc:
            errors.add(f"{name}: {exc}")
        self.predictions.clear()
        self.vectors.clear()

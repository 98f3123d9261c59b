"""Dataset versions: named, immutable snapshots of a project's data (items, gold labels with
source and agreement, the label schema, who answered what, and each item's split).

A version is asked for by a person (page, API, `manage.py snapshot`) or automatically every N
new gold labels (`ProjectTraining.snapshot_every`). Asking writes a queued row; a training
worker writes the file (`version_build`), then measures a model on it (`curation.version_metrics`),
so a request never waits for a pass over a million items. `version_create` does both at once
for the command line.

The data is read in one REPEATABLE READ transaction on PostgreSQL, so a version is one point in
time even while annotators keep labelling; it streams into a content-addressed file
(`curation.version_files`) and only the counts land in the row. Nothing here imports numpy: the
web processes call it too.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from annotations.exports import COMPLETE, export_items
from annotations.gold import INCOMPLETE
from annotations.models import GoldLabel, GoldSource, Item, Project
from annotations.webhooks.events import dataset_version_data, webhook_event
from annotations.webhooks.models import WebhookEvent
from curation import splits
from curation.models import ProjectTraining
from curation.training_requests import send_to_worker
from curation.version_files import VersionFileError, file_read, file_write
from curation.version_models import DatasetVersion, versions_dir

logger = logging.getLogger(__name__)

__all__ = [
    "VERSIONS",
    "VersionError",
    "VersionFileError",
    "labelled_gold",
    "metrics_pending",
    "projects_with_pending_versions",
    "snapshot_due",
    "version_build",
    "version_claim",
    "version_create",
    "version_event",
    "version_named",
    "version_open",
    "version_request",
    "versions_pending",
]

#: The message that wakes a worker to write a project's queued versions.
VERSIONS = "training.versions"
#: A version "being written" for longer than this lost its worker and is queued again.
STALE_AFTER = timedelta(minutes=30)
NAME_PATTERN = re.compile(r"^[\w][\w.\-]{0,99}$")
#: Names a version cannot take: page addresses under /versions/.
RESERVED_NAMES = frozenset({"diff"})


class VersionError(ValueError):
    """A request for a version that cannot be made as asked (name taken, bad name)."""


def version_request(
    project: Project,
    *,
    name: str = "",
    note: str = "",
    author=None,
    trigger: str = DatasetVersion.Trigger.MANUAL,
    wake: bool = True,
) -> DatasetVersion:
    """Queue a version of `project` and wake a worker to write it (after the commit)."""
    version = _new_row(project, name=name, note=note, author=author, trigger=trigger)
    if wake:
        transaction.on_commit(lambda: send_to_worker({"type": VERSIONS, "project_id": project.pk}))
    return version


def version_create(
    project: Project,
    *,
    name: str = "",
    note: str = "",
    author=None,
    trigger: str = DatasetVersion.Trigger.MANUAL,
) -> DatasetVersion:
    """Write a version now, in this process (`manage.py snapshot`); the model metrics are left
    to a worker (or `version_metrics.metrics_measure`)."""
    version = _new_row(
        project,
        name=name,
        note=note,
        author=author,
        trigger=trigger,
        status=DatasetVersion.Status.BUILDING,
    )
    version_build(version)
    version.refresh_from_db()
    return version


def _new_row(
    project: Project, *, status: str = DatasetVersion.Status.QUEUED, **fields
) -> DatasetVersion:
    name = (fields.pop("name") or "").strip()
    if name in RESERVED_NAMES:
        raise VersionError(f"Version name {name!r} is reserved; choose another.")
    if name and not NAME_PATTERN.match(name):
        raise VersionError(
            f"Version name {name!r}: use letters, digits, '.', '-' and '_' (at most 100), "
            "starting with a letter or digit."
        )
    for _attempt in range(5):
        number = (
            DatasetVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0
        ) + 1
        chosen = name or f"v{number}"
        if DatasetVersion.objects.filter(project=project, name=chosen).exists():
            if name:
                raise VersionError(f"Version name {name!r} is taken in this project.")
            chosen = f"v{number}-{timezone.now():%Y%m%d%H%M%S}"
        try:
            with transaction.atomic():
                return DatasetVersion.objects.create(
                    project=project,
                    number=number,
                    name=chosen,
                    status=status,
                    started_at=timezone.now() if status == DatasetVersion.Status.BUILDING else None,
                    **fields,
                )
        except IntegrityError:  # another request took the number (or the name) meanwhile
            if name and DatasetVersion.objects.filter(project=project, name=name).exists():
                raise VersionError(f"Version name {name!r} is taken in this project.") from None
    raise VersionError("Could not number the version: too many at once; try again.")


def versions_pending(project_id: int) -> list[DatasetVersion]:
    """Queued versions of the project, oldest first; versions whose writer died (STALE_AFTER)
    are queued again first."""
    DatasetVersion.objects.filter(
        project_id=project_id,
        status=DatasetVersion.Status.BUILDING,
        started_at__lt=timezone.now() - STALE_AFTER,
    ).update(status=DatasetVersion.Status.QUEUED)
    return list(
        DatasetVersion.objects.filter(
            project_id=project_id, status=DatasetVersion.Status.QUEUED
        ).order_by("number")
    )


def version_claim(version: DatasetVersion) -> bool:
    """Take a queued version for this worker; False when another one took it."""
    return bool(
        DatasetVersion.objects.filter(pk=version.pk, status=DatasetVersion.Status.QUEUED).update(
            status=DatasetVersion.Status.BUILDING, started_at=timezone.now()
        )
    )


def version_build(version: DatasetVersion) -> None:
    """Write the file of a version being built and fill in its row; a failure is recorded on
    the row (and logged), never raised."""
    project = version.project
    try:
        training = _training_row(project)
        rule = splits.split_rule(
            seed=training.split_seed,
            validation=training.split_validation,
            test=training.split_test,
            stratified=training.split_stratified,
        )
        earlier = _earlier_splits(project, rule, before=version.number)
        tally = _Tally()
        with _consistent_read():
            header = _header(project, rule)
            placed = _stratified(project, rule, earlier) if rule["stratified"] else {}
            rows = _rows(project, rule, placed, tally)
            written = file_write(versions_dir() / f"project-{project.pk}", header, rows)
    except Exception as exc:
        logger.exception("dataset version %s of project %s failed", version.name, project.pk)
        DatasetVersion.objects.filter(pk=version.pk).update(
            status=DatasetVersion.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )
        return
    counts = {
        "content_hash": written.content_hash,
        "items": tally.items,
        "labelled": tally.labelled,
        "answers": tally.answers,
        "class_counts": dict(sorted(tally.classes.items())),
        "split_counts": tally.split_counts(),
    }
    with transaction.atomic():
        DatasetVersion.objects.filter(pk=version.pk).update(
            status=DatasetVersion.Status.READY,
            finished_at=timezone.now(),
            file_name=str(written.path.relative_to(versions_dir())),
            file_sha256=written.file_sha256,
            file_size=written.size,
            split_rule=rule,
            metrics_status=DatasetVersion.Metrics.PENDING,
            **counts,
        )
        webhook_event(
            project,
            WebhookEvent.DATASET_VERSION,
            lambda: dataset_version_data(version, counts),
        )
    logger.info(
        "dataset version %s of project %s written: %s items, %s labelled, %s",
        version.name,
        project.pk,
        tally.items,
        tally.labelled,
        written.content_hash[:12],
    )


def metrics_pending(project_id: int) -> list[DatasetVersion]:
    """Written versions whose model is not measured yet, oldest first."""
    return list(
        DatasetVersion.objects.filter(
            project_id=project_id,
            status=DatasetVersion.Status.READY,
            metrics_status=DatasetVersion.Metrics.PENDING,
        ).order_by("number")
    )


def projects_with_pending_versions() -> list[int]:
    """Projects with a version to write or measure (the worker's sweep looks at them even
    when they have no model)."""
    return list(
        DatasetVersion.objects.filter(
            Q(status__in=[DatasetVersion.Status.QUEUED, DatasetVersion.Status.BUILDING])
            | Q(status=DatasetVersion.Status.READY, metrics_status=DatasetVersion.Metrics.PENDING)
        )
        .order_by("project_id")
        .values_list("project_id", flat=True)
        .distinct()
    )


def version_event(version: DatasetVersion) -> dict[str, Any]:
    """What the project's websocket group hears when a version changes state."""
    return {
        "type": "dataset.version",
        "version": version.name,
        "status": version.status,
        "metrics_status": version.metrics_status,
    }


def version_open(version: DatasetVersion) -> tuple[dict[str, Any], Callable[[], Iterator[dict]]]:
    """(header, rows) of a ready version, its file checked against the stored checksum first:
    `VersionFileError` for a damaged or missing file, `VersionError` for a version not written."""
    if not version.is_ready:
        raise VersionError(f"Version {version.name} is {version.get_status_display().lower()}.")
    return file_read(version.path, version.file_sha256)


def version_named(project: Project, name: str) -> DatasetVersion:
    """A version of `project` by name (or by number, "3"); `VersionError` naming the known
    ones otherwise."""
    version = DatasetVersion.objects.filter(project=project, name=name).first()
    if version is None and name.isdigit():
        version = DatasetVersion.objects.filter(project=project, number=int(name)).first()
    if version is None:
        known = list(
            DatasetVersion.objects.filter(project=project)
            .order_by("number")
            .values_list("name", flat=True)
        )
        raise VersionError(
            f"No version {name!r} in {project.name!r}; its versions: "
            f"{', '.join(known) or 'none yet'}."
        )
    return version


def labelled_gold(row: dict[str, Any]) -> list[str] | None:
    """The gold labels a version row trains and exports with, or None (no final label)."""
    gold = row.get("gold")
    if not gold or not gold.get("labels"):
        return None
    return list(gold["labels"])


def snapshot_due(project: Project) -> bool:
    """True when the project saves versions every N gold labels and N more are final since its
    last automatic or manual version (queued ones count as taken)."""
    every = (
        ProjectTraining.objects.filter(project=project).values_list("snapshot_every", flat=True)
    ).first()
    if not every:
        return False
    if DatasetVersion.objects.filter(
        project=project,
        status__in=[DatasetVersion.Status.QUEUED, DatasetVersion.Status.BUILDING],
    ).exists():
        return False
    last = (
        DatasetVersion.objects.filter(project=project, status=DatasetVersion.Status.READY)
        .order_by("-number")
        .values_list("labelled", flat=True)
        .first()
    ) or 0
    # The complete items bound the final gold labels from above (besides decided incomplete
    # ones, rare): a cheap counter before the count.
    if project.complete_count + _decided_incomplete(project) - last < every:
        return False
    return final_gold_count(project) - last >= every


def final_gold_count(project: Project) -> int:
    """Gold labels a version would count as labelled: of complete items, or decided."""
    return (
        GoldLabel.objects.filter(project=project, labels__isnull=False)
        .exclude(labels=[])
        .filter(Q(item__needs_annotation=False) | Q(source=GoldSource.ADJUDICATED))
        .count()
    )


def _decided_incomplete(project: Project) -> int:
    return GoldLabel.objects.filter(
        project=project, source=GoldSource.ADJUDICATED, item__needs_annotation=True
    ).count()


# -- writing -----------------------------------------------------------------------------------


def _training_row(project: Project) -> ProjectTraining:
    row, _ = ProjectTraining.objects.get_or_create(project=project)
    return row


@contextmanager
def _consistent_read() -> Iterator[None]:
    """One snapshot of the database for the whole read on PostgreSQL (REPEATABLE READ, READ
    ONLY: labels committed meanwhile are not in the version, none is half in). SQLite, the
    embedded demo's database, reads without a transaction: its IMMEDIATE transactions would
    hold every annotator's write for the length of the read. Called inside a transaction, the
    read is that transaction's."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield  # inside a caller's transaction, its snapshot is the one there is
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _header(project: Project, rule: dict[str, Any]) -> dict[str, Any]:
    classes = [
        {"name": c.name, "key": c.key, "color": c.color, "order": c.order, "retired": c.retired}
        for c in project.label_classes.order_by("order", "id")
    ]
    return {
        "project": {
            "name": project.name,
            "item_kind": project.item_kind,
            "labeling_mode": project.labeling_mode,
            "overlap": project.overlap,
        },
        "classes": classes,
        "split": rule,
        "items": Item.objects.filter(project=project).count(),
    }


def _earlier_splits(project: Project, rule: dict[str, Any], *, before: int) -> dict[str, str]:
    """external id → split in the newest readable version before this one, written under the
    same rule: items keep their place (stratified splits only; hash splits need no memory)."""
    if not rule["stratified"]:
        return {}
    for earlier in DatasetVersion.objects.filter(
        project=project, status=DatasetVersion.Status.READY, number__lt=before
    ).order_by("-number"):
        if earlier.split_rule != rule:
            continue
        try:
            _, rows = version_open(earlier)
            # Only labelled items: the others were placed by the hash alone.
            return {row["external_id"]: row["split"] for row in rows() if labelled_gold(row)}
        except (VersionFileError, VersionError):
            logger.warning("version %s is unreadable; splits are placed afresh", earlier.name)
    return {}


def _stratified(project: Project, rule: dict[str, Any], earlier: dict[str, str]) -> dict[str, str]:
    labelled = (
        (item.external_id, "|".join(item.gold.labels))
        for item in export_items(project)
        if item.gold is not None and item.gold.labels
    )
    return splits.stratified_splits(rule, labelled, earlier)


def _rows(
    project: Project, rule: dict[str, Any], placed: dict[str, str], tally: _Tally
) -> Iterator[dict[str, Any]]:
    is_image = project.item_kind == Project.ItemKind.IMAGE
    for item in export_items(project):
        gold = item.gold._asdict() if item.gold else None
        row: dict[str, Any] = {"item_id": item.id, "external_id": item.external_id}
        if is_image:
            row["image"] = item.image
        else:
            row["text"] = item.text
        row |= {
            "metadata": item.metadata,
            "status": COMPLETE if item.complete else INCOMPLETE,
            "gold": gold,
            "answers": [
                {
                    "annotator": a.annotator,
                    "labels": a.labels,
                    "skipped": a.skipped,
                    "created_at": a.created_at.isoformat(),
                    "updated_at": a.updated_at.isoformat(),
                }
                for a in item.answers
            ],
            "split": placed.get(item.external_id) or splits.by_hash(rule, item.external_id),
        }
        tally.add(row)
        yield row


class _Tally:
    """The counts a version's row shows, gathered while its rows stream into the file."""

    def __init__(self) -> None:
        self.items = self.labelled = self.answers = 0
        self.classes: Counter[str] = Counter()
        self.per_split: dict[str, Counter[str]] = {s: Counter() for s in splits.SPLITS}
        self.split_sizes: Counter[str] = Counter()

    def add(self, row: dict[str, Any]) -> None:
        self.items += 1
        self.answers += len(row["answers"])
        labels = labelled_gold(row)
        if labels is None:
            return
        self.labelled += 1
        self.split_sizes[row["split"]] += 1
        for label in labels:
            self.classes[label] += 1
            self.per_split[row["split"]][label] += 1

    def split_counts(self) -> dict[str, Any]:
        return {
            split: {"labelled": self.split_sizes[split], "classes": dict(sorted(counts.items()))}
            for split, counts in self.per_split.items()
        }

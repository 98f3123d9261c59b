"""Creating a project: its settings, its label classes and its first project admin, in one
transaction. The app's New project page, `POST /api/projects/`, Django admin, the demo and the
tests all call `project_create`; afterwards classes change through `annotations.label_classes`,
settings through `annotations.project_settings` and members through `annotations.members`.

The classes of a new project are checked together before anything is written (`class_errors`),
so a repeated name or key is reported on the row that repeats it and nothing is created.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from annotations.label_classes import PALETTE
from annotations.members import membership_add
from annotations.models import LabelClass, Membership, Project


@dataclass(frozen=True)
class ClassSpec:
    """One label class of a new project. An empty colour takes the palette's colour for its
    place; an empty key leaves the class to the 1–9 numbering."""

    name: str
    color: str = ""
    key: str = ""


def class_spec(entry: str | tuple[str, str] | ClassSpec) -> ClassSpec:
    """A class given as a name, a (name, colour) pair or a ClassSpec."""
    if isinstance(entry, ClassSpec):
        return entry
    if isinstance(entry, str):
        return ClassSpec(name=entry)
    name, color = entry
    return ClassSpec(name=name, color=color)


def _normalised(spec: ClassSpec, order: int) -> LabelClass:
    return LabelClass(
        name=(spec.name or "").strip(),
        color=(spec.color or "").strip() or PALETTE[order % len(PALETTE)],
        key=(spec.key or "").strip().lower(),
        order=order,
    )


def class_errors(specs: Sequence[ClassSpec]) -> list[dict[str, list[str]]]:
    """For each class in `specs`, its problems by field ({} for a good one): the model's own
    validators (name, colour like #4f7cff, a key of one letter or digit), then names and keys
    repeated within the list, reported on the later row."""
    out: list[dict[str, list[str]]] = []
    names: dict[str, int] = {}
    keys: dict[str, int] = {}
    for order, spec in enumerate(specs):
        row = _normalised(spec, order)
        errors: dict[str, list[str]] = {}
        if not row.name:
            errors["name"] = ["A label class needs a name."]
        try:
            row.clean_fields(exclude=["project", "order", "retired", *errors])
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
        if row.name and "name" not in errors:
            if row.name in names:
                errors["name"] = [f"Class {names[row.name] + 1} is already named {row.name!r}."]
            else:
                names[row.name] = order
        if row.key and "key" not in errors:
            if row.key in keys:
                errors["key"] = [f"Class {keys[row.key] + 1} already uses the key {row.key!r}."]
            else:
                keys[row.key] = order
        out.append(errors)
    return out


def project_create(
    *,
    name: str,
    item_kind: str = Project.ItemKind.TEXT,
    labeling_mode: str = Project.LabelingMode.SINGLE,
    classes: Iterable[str | tuple[str, str] | ClassSpec] = (),
    description: str = "",
    instructions: str = "",
    overlap: int = 1,
    creator: AbstractBaseUser | None = None,
    **settings: Any,
) -> Project:
    """A project with its label classes (in the order given) and, when `creator` is given,
    them as its project admin. `settings`: any other project setting of the settings page
    (`annotations.project_settings.PROJECT_FIELDS`). Raises ValidationError naming the field
    (`classes`: one message per bad class, numbered from 1) and then creates nothing."""
    # Imported here: project_settings imports the services module, which re-exports this one.
    from annotations.project_settings import PROJECT_FIELDS

    unknown = set(settings) - set(PROJECT_FIELDS)
    if unknown:
        raise ValidationError(f"Not a project setting: {', '.join(sorted(unknown))}.")
    specs = [class_spec(c) for c in classes]
    project = Project(
        name=(name or "").strip(),
        item_kind=item_kind,
        labeling_mode=labeling_mode,
        description=description,
        instructions=instructions,
        overlap=overlap,
        **settings,
    )
    errors: dict[str, list[str]] = {}
    try:
        project.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    class_messages = [
        f"Class {i + 1}: {message}"
        for i, row in enumerate(class_errors(specs))
        for messages in row.values()
        for message in messages
    ]
    if class_messages:
        errors["classes"] = class_messages
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            project.save()
            LabelClass.objects.bulk_create(
                [_with_project(_normalised(s, i), project) for i, s in enumerate(specs)]
            )
            if creator is not None:
                membership_add(
                    project=project,
                    username_or_email=creator.get_username(),
                    role=Membership.Role.ADMIN,
                )
    except IntegrityError:
        if not Project.objects.filter(name=project.name).exists():
            raise
        # Taken a moment ago, between the check above and the insert.
        raise ValidationError(
            {"name": f"A project named {project.name!r} already exists."}
        ) from None
    return project


def _with_project(label_class: LabelClass, project: Project) -> LabelClass:
    label_class.project = project
    return label_class

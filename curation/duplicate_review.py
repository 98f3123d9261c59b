"""Duplicate groups for the pages, the API and the commands, and sending conflicting ones to
review. Reads the rows the duplicates analysis wrote; imports none of its numerical machinery,
so web processes use it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import QuerySet

from annotations.models import GoldLabel, Item, Project, Review
from annotations.review import review_flag
from curation.dataset_models import DuplicateGroup, ItemDuplicate

__all__ = [
    "GroupMember",
    "duplicate_groups",
    "duplicates_to_review",
    "group_members",
    "item_duplicates",
]


@dataclass(frozen=True)
class GroupMember:
    item_id: int
    external_id: str
    similarity: float
    gold: list[str] | None


def duplicate_groups(project: Project, *, conflicting: bool | None = None) -> QuerySet:
    """The project's duplicate groups, newest first by id (conflicting ones only, or none of
    them, when asked)."""
    groups = DuplicateGroup.objects.filter(project=project)
    if conflicting is not None:
        groups = groups.filter(conflicting=conflicting)
    return groups.order_by("-id")


def group_members(group_ids: Iterable[int]) -> dict[int, list[GroupMember]]:
    """The members of each group, by group id, in item order, with their gold labels."""
    rows = list(
        ItemDuplicate.objects.filter(group_id__in=list(group_ids))
        .order_by("group_id", "item_id")
        .values_list("group_id", "item_id", "item__external_id", "similarity")
    )
    gold = dict(
        GoldLabel.objects.filter(item_id__in=[r[1] for r in rows]).values_list("item_id", "labels")
    )
    members: dict[int, list[GroupMember]] = {}
    for group_id, item_id, external_id, similarity in rows:
        members.setdefault(group_id, []).append(
            GroupMember(item_id, external_id, similarity, gold.get(item_id))
        )
    return members


def item_duplicates(item: Item) -> tuple[DuplicateGroup | None, list[GroupMember]]:
    """The group `item` belongs to and its *other* members (for the item and review pages)."""
    membership = ItemDuplicate.objects.filter(item=item).select_related("group").first()
    if membership is None:
        return None, []
    members = group_members([membership.group_id]).get(membership.group_id, [])
    return membership.group, [m for m in members if m.item_id != item.pk]


def duplicates_to_review(*, project: Project, user, group_ids: Iterable[int] | None = None) -> int:
    """Send every member of the project's conflicting groups (or of those of `group_ids` that
    are conflicting) to review with the reason "duplicates with different labels"; returns how
    many items were sent. Items already waiting for review for that reason are left alone."""
    groups = duplicate_groups(project, conflicting=True)
    if group_ids is not None:
        groups = groups.filter(pk__in=list(group_ids))
    items = (
        Item.objects.filter(duplicate__group__in=groups)
        .exclude(
            review__status=Review.Status.OPEN, review__reasons__contains=[Review.Reason.DUPLICATE]
        )
        .select_related("project")
        .order_by("pk")
    )
    sent = 0
    for item in items:
        others = ItemDuplicate.objects.filter(group_id=item.duplicate.group_id).exclude(item=item)
        names = ", ".join(others.values_list("item__external_id", flat=True)[:5])
        review_flag(
            item=item,
            user=user,
            note=f"Duplicate of {names} with a different gold label",
            reason=Review.Reason.DUPLICATE,
        )
        sent += 1
    return sent

"""Duplicate groups as rows: what makes one *conflicting* (its members' gold labels differ),
and keeping the groups right when members leave. The duplicates analysis
(`curation.duplicates`) writes the groups with this rule; `annotations.services.items_delete`
recounts them after a deletion. Models only, no numerical machinery: web processes import it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from django.db.models import QuerySet

from annotations.models import GoldLabel, Item
from curation.dataset_models import DuplicateGroup, ItemDuplicate

__all__ = ["duplicate_groups_of", "duplicate_groups_recount", "gold_label_sets", "labels_conflict"]

#: Rows read at once.
CHUNK = 5000


def gold_label_sets(ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
    """Each item's gold label set, sorted (items without one are left out)."""
    gold: dict[int, tuple[str, ...]] = {}
    for start in range(0, len(ids), CHUNK):
        rows = GoldLabel.objects.filter(
            item_id__in=ids[start : start + CHUNK], labels__isnull=False
        ).values_list("item_id", "labels")
        for pk, labels in rows:
            gold[pk] = tuple(sorted(labels)) if isinstance(labels, list) else (str(labels),)
    return gold


def labels_conflict(members: Iterable[int], gold: Mapping[int, tuple[str, ...]]) -> bool:
    """Whether the members that have a gold label have more than one between them."""
    return len({gold[pk] for pk in members if pk in gold}) > 1


def duplicate_groups_of(items: QuerySet[Item]) -> list[int]:
    """The ids of the duplicate groups `items` belong to (read before deleting them)."""
    return list(
        ItemDuplicate.objects.filter(item__in=items.values("pk"))
        .order_by("group_id")
        .values_list("group_id", flat=True)
        .distinct()
    )


def duplicate_groups_recount(group_ids: Collection[int]) -> None:
    """After members left these groups: each group's size and `conflicting` from the members
    that remain; a group left with fewer than two members is deleted (with its last member's
    row), and a near group whose remaining members are all exact copies becomes exact."""
    ids = sorted(group_ids)
    for start in range(0, len(ids), CHUNK // 5):
        chunk = ids[start : start + CHUNK // 5]
        members: dict[int, list[int]] = {pk: [] for pk in chunk}
        hashes: dict[int, set[int | None]] = {pk: set() for pk in chunk}
        rows = ItemDuplicate.objects.filter(group_id__in=chunk).values_list(
            "group_id", "item_id", "item__content_hash"
        )
        for group_id, item_id, content_hash in rows:
            members[group_id].append(item_id)
            hashes[group_id].add(content_hash)
        DuplicateGroup.objects.filter(pk__in=[g for g in chunk if len(members[g]) < 2]).delete()
        gold = gold_label_sets([pk for group in members.values() for pk in group])
        groups = list(
            DuplicateGroup.objects.filter(pk__in=[g for g in chunk if len(members[g]) > 1])
        )
        for group in groups:
            group.size = len(members[group.pk])
            group.conflicting = labels_conflict(members[group.pk], gold)
            same = hashes[group.pk]
            if len(same) == 1 and None not in same:
                group.kind = DuplicateGroup.Kind.EXACT
        DuplicateGroup.objects.bulk_update(groups, ["size", "conflicting", "kind"])

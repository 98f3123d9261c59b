"""What the exports of a dataset version read from its rows (the version file that
`curation.dataset_versions` writes): which items are labelled and with which classes, their
split, and their image file.

Shared by `curation.version_exports` and `curation.hf_export`. Plain functions over the
header and row dicts of a version file, so both are testable without a database. A row that
breaks the format (an unknown class or split, an image path outside MEDIA_ROOT) raises
`ExportError` rather than writing something half right.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "validation", "test")
NOTHING_LABELLED = "This version has no labelled items: there is no training data to export."


class ExportError(ValueError):
    """A dataset version cannot be exported as asked; the message says why."""


def is_multi_label(header: dict) -> bool:
    return header["project"]["labeling_mode"] == "multi"


def is_image(header: dict) -> bool:
    return header["project"]["item_kind"] == "image"


def class_ids(header: dict) -> dict[str, int]:
    """Each class's id: its position in the schema, retired classes included, so that an id
    means the same class in every version of a project."""
    return {c["name"]: i for i, c in enumerate(header["classes"])}


def labelled_ids(row: dict, ids: dict[str, int], *, multi: bool) -> list[int]:
    """The class ids of an item's gold labels, in schema order; [] when the item is not
    labelled (nobody answered, a tie waiting for review, still incomplete)."""
    gold = row.get("gold")
    names = gold.get("labels") if gold else None
    if not names:
        return []
    unknown = [name for name in names if name not in ids]
    if unknown:
        raise ExportError(
            f"Item {row['item_id']} is labelled {unknown[0]!r}, which is not a class of this "
            "version."
        )
    if not multi and len(names) != 1:
        raise ExportError(
            f"Item {row['item_id']} has {len(names)} labels in a single-label project."
        )
    return sorted({ids[name] for name in names})


def row_split(row: dict) -> str:
    """The item's split, checked: it becomes a file or folder name."""
    split = row.get("split")
    if split not in SPLITS:
        raise ExportError(f"Item {row['item_id']} has an unknown split {split!r}.")
    return split


def image_bytes(media_root: Path, row: dict) -> bytes:
    """The bytes of the item's stored image, read from inside `media_root` only."""
    root = media_root.resolve()
    path = (root / row["image"]).resolve()
    if not path.is_relative_to(root):
        raise ExportError(f"Item {row['item_id']}'s image path leaves the media folder.")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ExportError(
            f"Item {row['item_id']}'s image file {row['image']!r} is missing from {media_root}."
        ) from None

"""The live data as a Hugging Face `datasets` folder or, for images, a folder per class: the
same layouts as a dataset version's exports (`curation.hf_export`: Parquet per split, the labels
as a `ClassLabel`, a dataset card; `curation.version_exports`: `<split>/<class>/<image>` and
`labels.csv`), each item in the split the project's split rule places it by its external id.
Only items with a final label are written, as in a version's export.

pyarrow is imported when an export runs, never by a web process at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotations.exports import COMPLETE, export_items
from annotations.gold import INCOMPLETE
from annotations.models import Project


def live_header(project: Project, rule: dict[str, Any]) -> dict[str, Any]:
    """A header in the form a dataset version's file has (what `hf_export` reads)."""
    return {
        "project": {
            "name": project.name,
            "item_kind": project.item_kind,
            "labeling_mode": project.labeling_mode,
            "overlap": project.overlap,
        },
        "classes": [
            {"name": c.name, "retired": c.retired}
            for c in project.label_classes.order_by("order", "id")
        ],
        "split": rule,
        "items": project.item_count,
    }


def live_folder_export(project: Project, fmt: str, output: Path, *, media_root: Path) -> list[Path]:
    """Write the `hf` or `folders` export at `output` (created; an existing one must be
    empty); raises `curation.version_rows.ExportError` with the reason it cannot."""
    from curation import splits
    from curation.models import ProjectTraining
    from curation.version_exports import version_export

    training, _ = ProjectTraining.objects.get_or_create(project=project)
    rule = splits.split_rule(
        seed=training.split_seed,
        validation=training.split_validation,
        test=training.split_test,
        stratified=False,
    )
    header = live_header(project, rule)
    is_image = project.item_kind == Project.ItemKind.IMAGE

    def rows() -> Iterator[dict[str, Any]]:
        for item in export_items(project):
            row: dict[str, Any] = {"item_id": item.id, "external_id": item.external_id}
            row["image" if is_image else "text"] = item.image if is_image else item.text
            row["metadata"] = item.metadata
            row["status"] = COMPLETE if item.complete else INCOMPLETE
            row["gold"] = item.gold._asdict() if item.gold else None
            row["split"] = splits.by_hash(rule, item.external_id)
            yield row

    return version_export(
        header,
        rows,
        fmt,
        output,
        media_root=media_root,
        version_name="live",
        content_hash="(the live data, not a saved version)",
    )

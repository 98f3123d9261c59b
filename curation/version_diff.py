"""What changed between two dataset versions: items added and removed, and gold labels that
changed, with from → to counts per class pair.

Both files hold their items in id order, so the diff is one merge walk over the two, in
constant memory apart from the changes it reports. Versions never change, so a diff is kept
once computed, in a file named after the two content hashes (`diff_of`), and pages and API
calls read that.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curation.dataset_versions import labelled_gold, version_open
from curation.version_models import DatasetVersion, versions_dir

ADDED, REMOVED = "added", "removed"
RELABELLED, LABELLED, UNLABELLED = "relabelled", "labelled", "unlabelled"
CHANGES = (ADDED, REMOVED, RELABELLED, LABELLED, UNLABELLED)
NO_LABEL = "(none)"

__all__ = ["CHANGES", "NO_LABEL", "diff_compute", "diff_of"]


def diff_of(a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    """The diff from `a` to `b` (both ready), computed once and kept beside the versions."""
    cache = (
        versions_dir()
        / f"project-{a.project_id}"
        / "diffs"
        / f"{a.content_hash}-{b.content_hash}.json.gz"
    )
    if cache.exists():
        try:
            with gzip.open(cache, "rt", encoding="utf-8") as handle:
                return _named(json.load(handle), a, b)
        except (OSError, EOFError, ValueError):
            cache.unlink(missing_ok=True)  # damaged: computed again below
    result = diff_compute(a, b)
    _write(cache, result)
    return _named(result, a, b)


def _named(result: dict[str, Any], a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    return {"from": a.name, "to": b.name, **result}


def diff_compute(a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    """Walk both versions' items in id order and collect every change."""
    _, rows_a = version_open(a)
    _, rows_b = version_open(b)
    counts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    changes: list[dict[str, Any]] = []
    unchanged = 0
    for old, new in _merge(rows_a(), rows_b()):
        if new is None:
            change = _change(REMOVED, old, labelled_gold(old), None)
        elif old is None:
            change = _change(ADDED, new, None, labelled_gold(new))
        else:
            before, after = labelled_gold(old), labelled_gold(new)
            if before == after:
                unchanged += 1
                continue
            kind = LABELLED if before is None else UNLABELLED if after is None else RELABELLED
            change = _change(kind, new, before, after)
            pairs[(change["from"], change["to"])] += 1
        counts[change["change"]] += 1
        changes.append(change)
    return {
        "summary": {kind: counts[kind] for kind in CHANGES} | {"unchanged": unchanged},
        "pairs": [
            {"from": f, "to": t, "items": n}
            for (f, t), n in sorted(pairs.items(), key=lambda p: (-p[1], p[0]))
        ],
        "changes": changes,
    }


def _change(kind: str, row: dict[str, Any], before, after) -> dict[str, Any]:
    return {
        "change": kind,
        "item_id": row["item_id"],
        "external_id": row["external_id"],
        "from": "|".join(before) if before else NO_LABEL,
        "to": "|".join(after) if after else NO_LABEL,
    }


def _merge(
    a: Iterator[dict[str, Any]], b: Iterator[dict[str, Any]]
) -> Iterator[tuple[dict | None, dict | None]]:
    """Pairs of rows with the same item id, (row, None) or (None, row) for the unmatched."""
    old, new = next(a, None), next(b, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old["item_id"] < new["item_id"]):
            yield old, None
            old = next(a, None)
        elif old is None or new["item_id"] < old["item_id"]:
            yield None, new
            new = next(b, None)
        else:
            yield old, new
            old, new = next(a, None), next(b, None)


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".writing-")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
            out.write(json.dumps(result, ensure_ascii=False).encode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

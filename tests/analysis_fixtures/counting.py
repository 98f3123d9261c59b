"""A small real analysis for the run machinery's tests: counts the project's items in steps,
reporting progress; `FAIL` makes it raise, `DUE` makes it due without a request."""

from __future__ import annotations

from annotations.models import Item

FAIL = False
DUE = False


def is_due(project, last_run) -> bool:
    return DUE and (last_run is None or last_run.basis != project.items.count())


def run(project, run, report) -> dict:
    ids = list(Item.objects.filter(project=project).values_list("pk", flat=True))
    for done in range(0, len(ids) + 1, 10):
        report(done, len(ids), f"{done} of {len(ids)} items")
        if FAIL and done >= 10:
            raise RuntimeError("the data is on fire")
    return {"basis": len(ids), "summary": f"{len(ids)} items counted", "items": len(ids)}

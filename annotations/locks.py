"""One lock order for writes to a project's items and its progress counters.

A submission locks its item and then moves the project's counters; a recount (a new overlap,
deletions) rewrites every item of the project. Taken in opposite orders these deadlock, so every
such write first takes the project's *write lock*, a PostgreSQL transaction-level advisory lock:

- shared by writes to a few items (`annotation_submit`, `review_decide`, assignments): they run
  side by side, and then lock item rows in id order, then the project row;
- exclusive for project-wide rewrites (`project_recount`, `project_settings_update`): they wait
  for the submissions in flight and hold new ones back until they commit, so their counts are
  exact. They lock the project row `FOR NO KEY UPDATE`, which leaves the foreign-key checks of
  lease and answer inserts (`FOR KEY SHARE`) free to proceed. Label-class changes
  (`annotations.label_classes`) take it exclusively too, before their own schema lock.

Advisory locks queue fairly: an exclusive request is not starved by a stream of shared ones,
which a row lock (`FOR KEY SHARE` against `FOR UPDATE`) would not guarantee. SQLite runs write
transactions one at a time, so it needs none of this.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection

# The first key of the two-key advisory lock: the lock's kind, so project ids cannot collide with
# other advisory locks of the database.
_PROJECT_WRITES = 0x5DA7A9


def project_write_lock(
    project_id: int, *, exclusive: bool, then_shared: Sequence[int] = ()
) -> None:
    """Take the project's write lock until the end of the current transaction.

    `then_shared`: first keys of further advisory locks on the project (say, the schema lock
    of `annotations.label_classes`) to take shared right after it, in the same statement (its
    select list is evaluated in order): one round trip for what every submission needs."""
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("project_write_lock is held until commit: call it in a transaction.")
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    calls = [f"{function}(%s, %s)"] + ["pg_advisory_xact_lock_shared(%s, %s)"] * len(then_shared)
    params = [key for first in (_PROJECT_WRITES, *then_shared) for key in (first, project_id)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(calls)}", params)

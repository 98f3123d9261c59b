"""Django admin for projects, their schema and members, items, leases and annotations.

Writes that touch progress go through the services (`project_set_overlap`, `project_recount`,
`add_items_counted`, `assignments_delete`) so the counters on Project and Item stay exact
whatever the admin does; gold labels, reviews and their log are written by the review services
only, so they are read-only here.
Every value shown comes from user input somewhere, so HTML is only ever built with
`format_html` (which escapes its arguments). The item pages stay fast at a million rows:
no full counts, an estimated count for the unfiltered list, and summarised delete pages.
"""

from __future__ import annotations

from django.contrib import admin

from annotations.admin import items, members, projects, reviews, webhooks  # noqa: F401
from annotations.admin.items import LargeTablePaginator

admin.site.site_header = "dataprepops administration"
admin.site.site_title = "dataprepops admin"

__all__ = ["LargeTablePaginator"]

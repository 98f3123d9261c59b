"""The data browser (reviewers and project admins): a project's items as a filtered, sorted
table a keyset page at a time, and one item's page with everything known about it.

The filter form is a GET form, so the URL holds the whole view; htmx swaps only the results
(`#browse-results`) and pushes the URL, and every link works without JavaScript too. A filtered
page shows its table at once and loads the count of matching items with a request of its own
(`project_data_count`): at 1M items the bounded count costs more than the page.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from annotations import access
from annotations.browse import (
    FLAGS,
    SORTS,
    STATUSES,
    BrowsePage,
    BrowseQuery,
    BrowseQueryError,
    annotators_of,
    browse_page,
    count_matching,
    parse_limit,
)
from annotations.item_history import item_details
from annotations.models import GoldSource
from annotations.views.analyses import analyses_context


class HtmxRequest(HttpRequest):
    htmx: HtmxDetails


def _query_url(base: str, querystring: str, **extra: str) -> str:
    parts = [querystring] if querystring else []
    parts += [f"{k}={v}" for k, v in extra.items()]
    return f"{base}?{'&'.join(parts)}" if parts else base


@require_GET
@login_required
def project_data(request: HtmxRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    base = reverse("project_data", args=[project.pk])
    error = None
    query = BrowseQuery()
    page = BrowsePage(rows=[], next_cursor=None)
    # Unfiltered, the count is the project's counter; filtered, the page asks for it (htmx).
    count: int | None = 0
    exact = True
    try:
        query = BrowseQuery.from_querydict(project, request.GET)
        limit = parse_limit(request.GET.get("limit"))
        after = request.GET.get("after") or None
        page = browse_page(project, query, after=after, limit=limit)
        count, exact = (None, True) if query.is_filtered else count_matching(project, query)
    except BrowseQueryError as exc:
        error = exc
    querystring = query.to_querystring()
    context = {
        "project": project,
        "query": query,
        "page": page,
        "count": count,
        "count_exact": exact,
        "count_url": _query_url(reverse("project_data_count", args=[project.pk]), querystring),
        "error": error,
        "querystring": querystring,
        "base_url": base,
        "first_url": _query_url(base, querystring),
        "next_url": _query_url(base, querystring, after=page.next_cursor)
        if page.next_cursor
        else None,
        "paged": bool(request.GET.get("after")),
        "sort_links": {key: _query_url(base, query.sorted_by(key)) for key in SORTS},
        "statuses": STATUSES,
        "flags": FLAGS,
        "gold_sources": GoldSource.choices,
        "classes": project.class_names(),
        "annotators": annotators_of(project),
        "can_manage": access.can(project, access.MANAGE),
        "colspan": 12 + len(query.cols),
    }
    status = 400 if error else 200
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "annotations/_browse_results.html", context, status=status)
    context |= analyses_context(project)  # the analyses panel (`_analysis_runs.html`)
    return render(request, "annotations/browse.html", context, status=status)


@require_GET
@login_required
def project_data_count(request: HtmxRequest, pk: int) -> HttpResponse:
    """How many items the browser's filter matches (exact up to `COUNT_BOUND`): the fragment
    the data page loads after its table, or without JavaScript a page of its own."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    error = None
    count, exact = 0, True
    query = BrowseQuery()
    try:
        query = BrowseQuery.from_querydict(project, request.GET)
        count, exact = count_matching(project, query)
    except BrowseQueryError as exc:
        error = exc
    querystring = query.to_querystring()
    context = {
        "project": project,
        "count": count,
        "count_exact": exact,
        "error": error,
        "back_url": _query_url(reverse("project_data", args=[project.pk]), querystring),
    }
    status = 400 if error else 200
    if request.htmx:  # with the bulk bar's "Select all … matching items" out of band
        context["oob"] = True
        return render(request, "annotations/_browse_count.html", context, status=status)
    return render(request, "annotations/browse_count.html", context, status=status)


@require_GET
@login_required
def project_data_item(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    item = access.get_item_for_user(request.user, pk, item_pk, allowed=access.REVIEW)
    project = item.project
    details = item_details(project, item)
    back = request.GET.get("back", "")
    return render(
        request,
        "annotations/browse_item.html",
        {
            "project": project,
            "item": item,
            "d": details,
            "back_url": _query_url(reverse("project_data", args=[project.pk]), _safe_qs(back)),
            "can_manage": access.can(project, access.MANAGE),
        },
    )


def _safe_qs(querystring: str) -> str:
    """The browser's query string to return to, re-encoded (it is shown in a link)."""
    return QueryDict(querystring[:2000]).urlencode()

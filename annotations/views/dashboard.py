"""The project dashboard (reviewers and project admins): the page's tables, and its plots as the
training worker rendered them (`curation.dashboard`). Nothing here counts answers or items: the
numbers come from the rows the worker keeps."""

from __future__ import annotations

from typing import Any

from csp.decorators import csp_replace
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models.fields.json import KT
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotations import access
from annotations.models import Project
from curation.dashboard import OTHERS, PLOT_SERIES, PLOTS, dashboard_data
from curation.models import DashboardState

#: Each plot's text alternative; the table after it has the numbers.
PLOT_ALT = {
    "progress": "Items complete, in progress and open",
    "throughput_hourly": "Labels per hour and annotator, stacked, over the last two days",
    "throughput_daily": "Labels per day and annotator, stacked, over the last two weeks",
    "model": "Accuracy on the evaluation slice against the number of labels, with its 95% interval",
    "gold_balance": "Gold labels per class over time",
    "agreement": "Mean agreement of complete items over time",
    "versions": "Accuracy on the test split of each dataset version, with its 95% interval",
}


def dashboard_page(request: HttpRequest, project: Project, context: dict[str, Any]) -> HttpResponse:
    """The project page of a reviewer or project admin."""
    data = dashboard_data(project)
    throughput = data["throughput"]
    people = [p["username"] for p in throughput["annotators"]]
    hourly_people = _columns(throughput["hourly"], people)
    daily_people = _columns(throughput["daily"], people)
    gold_names = [c["name"] for c in data["gold"]["classes"]]
    context |= {
        "dash": data,
        "open_reviews": data["reviews"]["open"],
        "plot_alt": {name: PLOT_ALT[name] for name in data["plots"]},
        "hourly_people": hourly_people,
        "hourly_table": pivot(throughput["hourly"], "hour", hourly_people),
        "daily_people": daily_people,
        "daily_table": pivot(throughput["daily"], "day", daily_people),
        "gold_names": gold_names,
        "gold_table": [
            {
                "measured_at": row["measured_at"],
                "counts": [row["counts"][name] for name in gold_names],
                "total": row["total"],
            }
            for row in data["gold"]["over_time"]
        ],
        "agreement_table": [row for row in data["agreement"] if row["mean"] is not None],
        "refresh_seconds": settings.DASHBOARD_REFRESH_SECONDS,
        "plot_series": PLOT_SERIES,
        "others": OTHERS,
    }
    return render(request, "annotations/project_dashboard.html", context)


def _columns(rows: list[dict[str, Any]], people: list[str]) -> list[str]:
    """The plot's series that have a row in `rows`: the PLOT_SERIES most active annotators,
    then the others together."""
    present = {row["annotator"] for row in rows}
    named = [person for person in people[:PLOT_SERIES] if person in present]
    return named + ([OTHERS] if present - set(named) else [])


def pivot(rows: list[dict[str, Any]], slot: str, columns: list[str]) -> list[dict[str, Any]]:
    """Answers per `slot` (hour or day) as table rows: one count per column (an annotator, or
    the others together), and the total."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        who = row["annotator"] if row["annotator"] in columns else OTHERS
        counts = table.setdefault(row[slot], {})
        counts[who] = counts.get(who, 0) + row["answers"]
    return [
        {
            "slot": key,
            "counts": [counts.get(column, 0) for column in columns],
            "total": sum(counts.values()),
        }
        for key, counts in table.items()
    ]


@require_GET
@login_required
@csp_replace(
    {
        # An SVG opened on its own is a document: no script, nothing loaded, its inline styles
        # (matplotlib writes style attributes) allowed.
        "default-src": ["'none'"],
        "script-src": ["'none'"],
        "style-src": ["'unsafe-inline'"],
        "img-src": ["'none'"],
        "connect-src": ["'none'"],
    }
)
def project_dashboard_plot(request: HttpRequest, pk: int, plot: str) -> HttpResponse:
    """One plot of the dashboard, as the worker stored it; 404 until it has been rendered."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    if plot not in PLOTS:
        raise Http404("No such plot.")
    svg = (
        DashboardState.objects.filter(project=project)
        .annotate(svg=KT(f"plots__{plot}"))
        .values_list("svg", flat=True)
        .first()
    )
    if not svg:
        raise Http404("This plot has not been drawn yet.")
    response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response

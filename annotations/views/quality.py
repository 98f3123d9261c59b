"""The project quality page: agreement between annotators and each annotator's accuracy, for
reviewers and project admins (the same report as `GET /api/projects/<id>/quality/`)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotations import access
from annotations.gold import INCOMPLETE
from annotations.models import GoldSource
from curation.services import quality_report

# The values shown in each heat map's legend.
KAPPA_LEGEND = [-0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
SHARE_LEGEND = [0.0, 0.25, 0.5, 0.75, 1.0]


@require_GET
@login_required
def project_quality(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    report = quality_report(project)
    agreement = report["agreement"]
    if project.is_multi_label:
        sections = [_section(c, name) for name, c in agreement["per_class"].items()]
    else:
        sections = [_section(agreement)]
    below = [row for row in report["annotators"] if row["below_threshold"]]
    return render(
        request,
        "annotations/quality.html",
        {
            "project": project,
            "report": report,
            "sections": sections,
            "below": below,
            "gold": [(source.label, report["gold"][source.value]) for source in GoldSource]
            + [("Not final: the item still waits for answers", report["gold"][INCOMPLETE])],
            "can_manage": access.can(project, access.MANAGE),
            "kappa_legend": KAPPA_LEGEND,
            "share_legend": SHARE_LEGEND,
        },
    )


def _section(coefficients: dict, name: str | None = None) -> dict:
    """One set of coefficients (the project's, or one class's in a multi-label project) with
    its two heat maps laid out as rows of cells."""
    return {
        "name": name,
        "c": coefficients,
        "kappa": _kappa_grid(coefficients),
        "confusion": _confusion_grid(coefficients),
    }


def _kappa_grid(coefficients: dict) -> list[dict]:
    """Annotator × annotator: Cohen's kappa and the items the pair shared (symmetric)."""
    pairs = {}
    for pair in coefficients["cohen_kappa"]:
        a, b = pair["annotators"]
        pairs[a, b] = pairs[b, a] = pair
    names = coefficients["annotators"]
    return [
        {
            "name": a,
            "cells": [
                {
                    "other": b,
                    "self": a == b,
                    "kappa": pairs[a, b]["kappa"] if a != b else None,
                    "shared": pairs[a, b]["shared_items"] if a != b else None,
                }
                for b in names
            ],
        }
        for a in names
    ]


def _confusion_grid(coefficients: dict) -> list[dict]:
    """Class × class: how often one annotator chose the row's class while another chose the
    column's on the same item, with the share of the row."""
    rows = []
    for name, counts in zip(coefficients["classes"], coefficients["confusion"], strict=True):
        total = sum(counts)
        rows.append(
            {
                "name": name,
                "total": total,
                "cells": [
                    {"other": other, "count": n, "share": n / total if total else None}
                    for other, n in zip(coefficients["classes"], counts, strict=True)
                ],
            }
        )
    return rows

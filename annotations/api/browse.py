"""The data browser over the API (reviewers and project admins): the same filters, sorts and
keyset cursor as the page (`annotations.browse`), and one item's details as its page shows
them. A parameter that is not understood answers 400 naming it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.shapes import DATA_PAGE_PARAMETERS, DataItemSerializer, DataPageSerializer
from annotations.browse import (
    BrowseQuery,
    BrowseQueryError,
    BrowseRow,
    browse_page,
    count_matching,
    parse_limit,
)
from annotations.item_history import item_details


def row_data(row: BrowseRow, cols: list[str]) -> dict[str, Any]:
    """One row of the browser as JSON: the page's columns."""
    item = row.item
    gold, prediction, issue = row.gold(), row.prediction(), row.label_issue()
    duplicate, outlier = row.duplicate(), row.outlier()
    return {
        "id": item.pk,
        "external_id": item.external_id,
        "excerpt": row.excerpt,
        "has_image": bool(item.image),
        "status": row.status,
        "gold": None
        if gold is None
        else {"labels": gold.labels, "source": gold.source, "agreement": gold.agreement},
        "answers": item.annotation_count,
        "prediction": None
        if prediction is None
        else {
            "labels": prediction.labels,
            "confidence": prediction.confidence,
            "version": prediction.version,
        },
        "label_error": None
        if issue is None
        else {"score": issue.score, "suggested": issue.suggested, "status": issue.status},
        "duplicate_group": duplicate.group_id if duplicate is not None else None,
        "outlier_score": outlier.score if outlier is not None else None,
        "metadata": dict(zip(cols, row.columns, strict=True)),
    }


def _bad(exc: BrowseQueryError) -> ValidationError:
    return ValidationError({exc.field: [exc.message]})


class DataList(APIView):
    """`GET /api/projects/<pk>/data/`: the matching items, a keyset page at a time. Parameters
    as on the page; `limit` (1–500, default 50) and `after` (the `next` link's cursor)."""

    @extend_schema(parameters=DATA_PAGE_PARAMETERS, responses=DataPageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
        try:
            query = BrowseQuery.from_querydict(project, request.query_params)
            limit = parse_limit(request.query_params.get("limit"))
            page = browse_page(
                project, query, after=request.query_params.get("after") or None, limit=limit
            )
            count, exact = count_matching(project, query)
        except BrowseQueryError as exc:
            raise _bad(exc) from None
        next_url = None
        if page.next_cursor:
            params = query.params() + [("after", page.next_cursor)]
            if request.query_params.get("limit"):
                params.append(("limit", str(limit)))
            next_url = request.build_absolute_uri(
                f"{reverse('api-data-list', args=[project.pk])}?{urlencode(params)}"
            )
        return Response(
            {
                "count": count,
                "count_exact": exact,
                "query": query.to_querystring(),
                "next": next_url,
                "results": [row_data(row, query.cols) for row in page.rows],
            }
        )


class DataItem(APIView):
    """`GET /api/projects/<pk>/data/items/<item_pk>/`: what the item page shows."""

    @extend_schema(responses=DataItemSerializer)
    def get(self, request: Request, pk: int, item_pk: int) -> Response:
        item = access.get_item_for_user(request.user, pk, item_pk, allowed=access.REVIEW)
        d = item_details(item.project, item)
        return Response(
            {
                "id": item.pk,
                "external_id": item.external_id,
                "text": item.text,
                "has_image": bool(item.image),
                "metadata": item.metadata,
                "answers": d.answers,
                "gold": d.gold,
                "history": [e.as_dict() for e in d.history],
                "review": d.review,
                "prediction": d.prediction,
                "prediction_changes": d.prediction_changes,
                "eval_sample": d.eval_sample,
                "label_issue": d.label_issue,
                "duplicates": d.duplicates,
                "neighbours": d.neighbours,
                "outlier_score": d.extra.get("outlier_score"),
                "relabels": d.relabels,
            }
        )

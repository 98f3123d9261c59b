"""The project dashboard over the API (reviewers and project admins, as on the page): the same
numbers (`curation.dashboard.dashboard_data`), as of the worker's last refresh."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.shapes import DashboardSerializer
from curation.dashboard import dashboard_data


class ProjectDashboard(APIView):
    """Progress, time to finish, throughput per annotator, the model's accuracy curve, gold
    labels and agreement over time, open reviews, likely label errors, duplicates and the
    dataset versions; `ready` is false until the worker has counted the project once."""

    @extend_schema(responses=DashboardSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
        return Response(dashboard_data(project))

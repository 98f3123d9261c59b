"""Mounted at /api/. Route names start with `api-`."""

from __future__ import annotations

from django.urls import path

from annotations.api import (
    analyses,
    browse,
    bulk,
    classes,
    dashboard,
    docs,
    duplicates,
    imports,
    members,
    preannotations,
    prediction_endpoint,
    review,
    tokens,
    versions,
    views,
    webhooks,
)

urlpatterns = [
    path("schema/", docs.schema_view, name="api-schema"),
    path("docs/", docs.docs_view, name="api-docs"),
    path("auth/token/", tokens.ObtainToken.as_view(), name="api-token"),
    path("projects/", views.ProjectList.as_view(), name="api-project-list"),
    path("projects/<int:pk>/", views.ProjectDetail.as_view(), name="api-project-detail"),
    path("projects/<int:pk>/classes/", classes.LabelClassList.as_view(), name="api-class-list"),
    path(
        "projects/<int:pk>/classes/<int:class_id>/",
        classes.LabelClassDetail.as_view(),
        name="api-class-detail",
    ),
    path("projects/<int:pk>/members/", members.MemberList.as_view(), name="api-member-list"),
    path(
        "projects/<int:pk>/members/<int:user_id>/",
        members.MemberDetail.as_view(),
        name="api-member-detail",
    ),
    path(
        "projects/<int:pk>/dashboard/",
        dashboard.ProjectDashboard.as_view(),
        name="api-project-dashboard",
    ),
    path("projects/<int:pk>/items/", views.ItemList.as_view(), name="api-item-list"),
    path("projects/<int:pk>/items/import/", imports.ItemImport.as_view(), name="api-item-import"),
    path("projects/<int:pk>/items/actions/", bulk.ItemActions.as_view(), name="api-item-actions"),
    path(
        "projects/<int:pk>/items/actions/log/",
        bulk.ItemActionLog.as_view(),
        name="api-item-action-log",
    ),
    path("projects/<int:pk>/export.<str:fmt>", bulk.ProjectExport.as_view(), name="api-export"),
    path(
        "projects/<int:pk>/items/export.<str:fmt>",
        bulk.ItemExport.as_view(),
        name="api-item-export",
    ),
    path(
        "projects/<int:pk>/items/<int:item_pk>/image/",
        views.ItemImage.as_view(),
        name="api-item-image",
    ),
    path("projects/<int:pk>/versions/", versions.VersionList.as_view(), name="api-version-list"),
    path(
        "projects/<int:pk>/versions/diff/", versions.VersionDiff.as_view(), name="api-version-diff"
    ),
    path(
        "projects/<int:pk>/versions/<str:name>/",
        versions.VersionDetail.as_view(),
        name="api-version-detail",
    ),
    path(
        "projects/<int:pk>/versions/<str:name>/export.<str:fmt>",
        versions.VersionDownload.as_view(),
        name="api-version-export",
    ),
    path(
        "projects/<int:pk>/predictions/",
        preannotations.PredictionList.as_view(),
        name="api-prediction-list",
    ),
    path("projects/<int:pk>/vectors/", preannotations.VectorList.as_view(), name="api-vector-list"),
    path(
        "projects/<int:pk>/items/<int:item_pk>/vector/",
        preannotations.ItemVectorDetail.as_view(),
        name="api-item-vector",
    ),
    path("projects/<int:pk>/next/", views.NextItems.as_view(), name="api-next-items"),
    path("projects/<int:pk>/agreement/", views.Agreement.as_view(), name="api-agreement"),
    path("projects/<int:pk>/quality/", views.Quality.as_view(), name="api-quality"),
    path("projects/<int:pk>/reviews/", review.ReviewList.as_view(), name="api-review-list"),
    path("projects/<int:pk>/reviews/next/", review.ReviewNext.as_view(), name="api-review-next"),
    path(
        "projects/<int:pk>/reviews/<int:review_pk>/",
        review.ReviewDetail.as_view(),
        name="api-review-detail",
    ),
    path(
        "projects/<int:pk>/reviews/<int:review_pk>/decision/",
        review.ReviewDecision.as_view(),
        name="api-review-decision",
    ),
    path(
        "projects/<int:pk>/reviews/<int:review_pk>/reopen/",
        review.ReviewReopen.as_view(),
        name="api-review-reopen",
    ),
    path(
        "projects/<int:pk>/items/<int:item_pk>/flag/",
        review.ItemFlag.as_view(),
        name="api-item-flag",
    ),
    path("projects/<int:pk>/data/", browse.DataList.as_view(), name="api-data-list"),
    path(
        "projects/<int:pk>/data/items/<int:item_pk>/",
        browse.DataItem.as_view(),
        name="api-data-item",
    ),
    path(
        "projects/<int:pk>/duplicates/",
        duplicates.DuplicateGroupList.as_view(),
        name="api-duplicate-list",
    ),
    path(
        "projects/<int:pk>/duplicates/review/",
        duplicates.DuplicatesToReview.as_view(),
        name="api-duplicates-review",
    ),
    path(
        "projects/<int:pk>/analyses/",
        analyses.AnalysisRunList.as_view(),
        name="api-analysis-runs",
    ),
    path(
        "projects/<int:pk>/analyses/<str:kind>/",
        analyses.AnalysisRunCreate.as_view(),
        name="api-analysis-run",
    ),
    path(
        "projects/<int:pk>/label-errors/",
        analyses.LabelErrorList.as_view(),
        name="api-label-errors",
    ),
    path(
        "projects/<int:pk>/label-errors/review/",
        analyses.LabelErrorsToReview.as_view(),
        name="api-label-errors-review",
    ),
    path(
        "projects/<int:pk>/items/<int:item_pk>/label-issue/dismiss/",
        analyses.LabelIssueDismiss.as_view(),
        name="api-label-issue-dismiss",
    ),
    path("projects/<int:pk>/webhooks/", webhooks.WebhookList.as_view(), name="api-webhook-list"),
    path(
        "projects/<int:pk>/webhooks/<int:hook_pk>/",
        webhooks.WebhookDetail.as_view(),
        name="api-webhook-detail",
    ),
    path(
        "projects/<int:pk>/webhooks/<int:hook_pk>/deliveries/",
        webhooks.WebhookDeliveries.as_view(),
        name="api-webhook-deliveries",
    ),
    path(
        "projects/<int:pk>/prediction-endpoint/",
        prediction_endpoint.PredictionEndpointDetail.as_view(),
        name="api-prediction-endpoint",
    ),
    path(
        "projects/<int:pk>/annotations/",
        views.AnnotationList.as_view(),
        name="api-annotation-list",
    ),
]

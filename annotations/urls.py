from django.urls import path

from annotations.views import (
    analyses,
    annotate,
    classes,
    data,
    manage,
    media,
    projects,
    quality,
    review,
)

urlpatterns = [
    path("", projects.project_list, name="project_list"),
    path("<int:pk>/", projects.project_detail, name="project_detail"),
    path("<int:pk>/annotate/", annotate.annotate, name="annotate"),
    path("<int:pk>/annotate/next/", annotate.annotate_next, name="annotate_next"),
    path("<int:pk>/annotate/submit/", annotate.annotate_submit, name="annotate_submit"),
    path("<int:pk>/annotate/heartbeat/", annotate.annotate_heartbeat, name="annotate_heartbeat"),
    path("<int:pk>/annotate/items/<int:item_pk>/", annotate.annotate_item, name="annotate_item"),
    path("<int:pk>/items/<int:item_pk>/image/", media.item_image, name="item_image"),
    path("<int:pk>/items/<int:item_pk>/flag/", review.item_flag, name="item_flag"),
    path("<int:pk>/review/", review.review_page, name="review"),
    path("<int:pk>/review/heartbeat/", review.review_heartbeat, name="review_heartbeat"),
    path("<int:pk>/review/<int:review_pk>/", review.review_detail, name="review_detail"),
    path(
        "<int:pk>/review/<int:review_pk>/decide/",
        review.review_decide_view,
        name="review_decide",
    ),
    path("<int:pk>/review/<int:review_pk>/skip/", review.review_skip_view, name="review_skip"),
    path(
        "<int:pk>/review/<int:review_pk>/reopen/",
        review.review_reopen_view,
        name="review_reopen",
    ),
    path("<int:pk>/import/", data.project_import, name="project_import"),
    path("<int:pk>/export.jsonl", data.project_export_jsonl, name="project_export_jsonl"),
    path("<int:pk>/export.csv", data.project_export_csv, name="project_export_csv"),
    path("<int:pk>/data/analyses/", analyses.project_analyses, name="project_analyses"),
    path(
        "<int:pk>/data/analyses/<str:kind>/",
        analyses.project_analysis_run,
        name="project_analysis_run",
    ),
    path(
        "<int:pk>/data/label-errors/review/",
        analyses.project_label_errors_review,
        name="project_label_errors_review",
    ),
    path(
        "<int:pk>/items/<int:item_pk>/label-issue/dismiss/",
        analyses.item_label_issue_dismiss,
        name="item_label_issue_dismiss",
    ),
    path("<int:pk>/quality/", quality.project_quality, name="project_quality"),
    path("<int:pk>/settings/", manage.project_settings, name="project_settings"),
    path("<int:pk>/classes/", classes.project_label_classes, name="project_label_classes"),
    path("<int:pk>/members/", manage.project_members, name="project_members"),
    path("<int:pk>/assignments/", manage.project_assignments, name="project_assignments"),
]

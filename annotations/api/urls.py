"""Mounted at /api/. Route names start with `api-`."""

from __future__ import annotations

from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from annotations.api import views

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("projects/", views.ProjectList.as_view(), name="api-project-list"),
    path("projects/<int:pk>/", views.ProjectDetail.as_view(), name="api-project-detail"),
    path("projects/<int:pk>/items/", views.ItemList.as_view(), name="api-item-list"),
    path(
        "projects/<int:pk>/items/<int:item_pk>/image/",
        views.ItemImage.as_view(),
        name="api-item-image",
    ),
    path("projects/<int:pk>/next/", views.NextItems.as_view(), name="api-next-items"),
    path("projects/<int:pk>/agreement/", views.Agreement.as_view(), name="api-agreement"),
    path(
        "projects/<int:pk>/annotations/",
        views.AnnotationList.as_view(),
        name="api-annotation-list",
    ),
]

"""The project admin's Prediction endpoint page: the settings of the team's own model server
(URL, auth header, batch size, timeout, enabled, whether it ranks the queue), its status (last
call, last error, items predicted, model version) and removing it. Every write goes through
`annotations.prediction_endpoint`; the calls are the training worker's."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotations import access
from annotations.prediction_endpoint import (
    BATCH_MAX,
    TIMEOUT_MAX,
    endpoint_delete,
    endpoint_of,
    endpoint_save,
)
from annotations.views.manage import _add_errors


class PredictionEndpointForm(forms.Form):
    url = forms.CharField(
        max_length=2000,
        label="Endpoint URL",
        widget=forms.URLInput(
            attrs={"size": 60, "placeholder": "https://models.example.com/predict"}
        ),
    )
    auth_header = forms.CharField(
        max_length=2000,
        required=False,
        label="Authorization header",
        help_text="Sent as the Authorization header, e.g. “Bearer …”. Leave empty to keep the "
        "stored one.",
        widget=forms.PasswordInput(attrs={"size": 60, "autocomplete": "off"}),
    )
    remove_auth_header = forms.BooleanField(required=False, label="Remove the stored header")
    batch_size = forms.IntegerField(min_value=1, max_value=BATCH_MAX, initial=32)
    timeout_seconds = forms.IntegerField(
        min_value=1, max_value=TIMEOUT_MAX, initial=30, label="Timeout (seconds)"
    )
    enabled = forms.BooleanField(required=False, initial=True)
    rank_queue = forms.BooleanField(
        required=False,
        initial=True,
        label="Rank the queue by the endpoint",
        help_text="The queue serves first the items its probabilities are least sure of (by the "
        "project's strategy); our model still trains for the accuracy and suggestions.",
    )


@require_http_methods(["GET", "POST"])
@login_required
def project_prediction_endpoint(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
    endpoint = endpoint_of(project)
    status = 200
    if request.method == "POST":
        if request.POST.get("action") == "delete":
            if endpoint_delete(project):
                messages.success(request, "Prediction endpoint removed.")
            return redirect("project_prediction_endpoint", pk=project.pk)
        form = PredictionEndpointForm(request.POST)
        if form.is_valid():
            data = dict(form.cleaned_data)
            header = data.pop("auth_header")
            remove = data.pop("remove_auth_header")
            try:
                endpoint_save(
                    project=project,
                    user=request.user,
                    auth_header="" if remove else (header or None),
                    **data,
                )
            except ValidationError as exc:
                _add_errors(form, exc)
            else:
                messages.success(request, "Prediction endpoint saved.")
                return redirect("project_prediction_endpoint", pk=project.pk)
        status = 400
    elif endpoint is not None:
        form = PredictionEndpointForm(
            initial={
                "url": endpoint.url,
                "batch_size": endpoint.batch_size,
                "timeout_seconds": endpoint.timeout_seconds,
                "enabled": endpoint.enabled,
                "rank_queue": endpoint.rank_queue,
            }
        )
    else:
        form = PredictionEndpointForm()
    return render(
        request,
        "annotations/project_prediction_endpoint.html",
        {"project": project, "endpoint": endpoint, "form": form, "tab": "endpoint"},
        status=status,
    )

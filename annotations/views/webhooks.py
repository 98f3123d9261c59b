"""The project admin's Webhooks page: the project's hooks, adding one (its secret is shown on
the answer to that POST only), rotating a secret, enabling, disabling, deleting, sending a test
event, and each hook's recent deliveries with a redeliver button. Every write goes through
`annotations.webhooks.services`."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotations import access
from annotations.models import Project
from annotations.views.manage import _add_errors
from annotations.webhooks.models import Webhook, WebhookDelivery, WebhookEvent
from annotations.webhooks.services import (
    deliveries_of,
    delivery_redeliver,
    hooks_of,
    webhook_create,
    webhook_delete,
    webhook_ping,
    webhook_rotate_secret,
    webhook_update,
)

#: Deliveries shown per hook.
SHOWN = 10


class WebhookForm(forms.Form):
    url = forms.CharField(
        max_length=2000,
        label="Payload URL",
        widget=forms.URLInput(attrs={"size": 60, "placeholder": "https://example.com/hooks"}),
    )
    description = forms.CharField(max_length=200, required=False)
    events = forms.MultipleChoiceField(
        choices=WebhookEvent.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[WebhookEvent.ITEM_COMPLETED, WebhookEvent.REVIEW_DECIDED],
    )


def _hook(project: Project, value: str | None) -> Webhook:
    hook = (
        Webhook.objects.filter(project=project, pk=int(value)).first()
        if value and value.isdigit() and len(value) < 19
        else None
    )
    if hook is None:
        raise Http404("No such webhook in this project.")
    return hook


@require_http_methods(["GET", "POST"])
@login_required
def project_webhooks(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
    form = WebhookForm()
    status = 200
    secret: tuple[Webhook, str] | None = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "add":
            form = WebhookForm(request.POST)
            if form.is_valid():
                try:
                    hook = webhook_create(project=project, user=request.user, **form.cleaned_data)
                except ValidationError as exc:
                    _add_errors(form, exc)
                else:
                    # Not a redirect: the secret is shown on this answer and never again.
                    secret, form = (hook, hook.secret), WebhookForm()
            if secret is None:
                status = 400
        elif action == "redeliver":
            wanted = request.POST.get("delivery", "")
            delivery = (
                WebhookDelivery.objects.filter(webhook__project=project, pk=int(wanted)).first()
                if wanted.isdigit() and len(wanted) < 19
                else None
            )
            if delivery is None:
                raise Http404("No such delivery in this project.")
            delivery_redeliver(delivery)
            messages.success(request, f"Delivery {delivery.pk} queued again.")
            return redirect("project_webhooks", pk=project.pk)
        elif action not in ("rotate", "enable", "disable", "delete", "ping"):
            status = 400
            messages.error(request, "Unknown action.")
        else:
            hook = _hook(project, request.POST.get("hook"))
            if action == "rotate":
                secret = (hook, webhook_rotate_secret(hook))
            elif action in ("enable", "disable"):
                webhook_update(hook, active=action == "enable")
                messages.success(request, f"Webhook {hook.url} {action}d.")
                return redirect("project_webhooks", pk=project.pk)
            elif action == "delete":
                webhook_delete(hook)
                messages.success(request, f"Webhook {hook.url} deleted.")
                return redirect("project_webhooks", pk=project.pk)
            elif action == "ping":
                webhook_ping(hook)
                messages.success(request, f"Test event queued for {hook.url}.")
                return redirect("project_webhooks", pk=project.pk)
    hooks = [(hook, deliveries_of(hook, limit=SHOWN)) for hook in hooks_of(project)]
    return render(
        request,
        "annotations/project_webhooks.html",
        {
            "project": project,
            "hooks": hooks,
            "form": form,
            "secret": secret,
            "event_labels": dict(WebhookEvent.choices),
            "tab": "webhooks",
        },
        status=status,
    )

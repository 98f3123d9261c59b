"""The Webhooks page, the API and the admin: project admins only, the secret shown once, every
action through the services."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotations.models import Webhook, WebhookDelivery
from annotations.webhooks.models import WebhookEvent
from annotations.webhooks.services import webhook_create, webhook_ping

pytestmark = pytest.mark.usefixtures("fast_passwords")

PUBLIC_URL = "https://93.184.216.34/hooks"


def page(project) -> str:
    return reverse("project_webhooks", args=[project.pk])


def api(project, *rest) -> str:
    return f"/api/projects/{project.pk}/webhooks/" + "".join(f"{r}/" for r in rest)


@pytest.fixture
def hook(project, project_admin) -> Webhook:
    return webhook_create(
        project=project, url=PUBLIC_URL, events=[WebhookEvent.ITEM_COMPLETED], user=project_admin
    )


def test_outsiders_get_404_and_annotators_403_on_the_page_and_the_api(
    client, project, annotator, outsider, hook
):
    client.force_login(outsider)
    assert client.get(page(project)).status_code == 404
    assert client.post(page(project), {"action": "delete", "hook": hook.pk}).status_code == 404
    assert client.get(api(project)).status_code == 404
    assert client.delete(api(project, hook.pk)).status_code == 404
    client.force_login(annotator)
    assert client.get(page(project)).status_code == 403
    assert client.get(api(project, hook.pk, "deliveries")).status_code == 403
    assert (
        client.patch(
            api(project, hook.pk), {"active": False}, content_type="application/json"
        ).status_code
        == 403
    )
    assert Webhook.objects.get().active


def test_a_project_admin_adds_a_hook_and_sees_its_secret_once(client, project, project_admin):
    client.force_login(project_admin)
    response = client.post(
        page(project),
        {
            "action": "add",
            "url": PUBLIC_URL,
            "description": "CI pipeline",
            "events": [WebhookEvent.ANNOTATION_SAVED, WebhookEvent.MODEL_VERSION],
        },
    )
    assert response.status_code == 200
    hook = Webhook.objects.get()
    assert hook.events == [WebhookEvent.ANNOTATION_SAVED, WebhookEvent.MODEL_VERSION]
    assert hook.secret in response.content.decode()
    again = client.get(page(project)).content.decode()
    assert hook.secret not in again and PUBLIC_URL in again and "CI pipeline" in again
    project.refresh_from_db()
    assert project.webhook_events == [WebhookEvent.ANNOTATION_SAVED, WebhookEvent.MODEL_VERSION]


def test_an_internal_url_is_refused_on_the_page_with_the_reason(client, project, project_admin):
    client.force_login(project_admin)
    response = client.post(
        page(project),
        {"action": "add", "url": "http://169.254.169.254/latest/", "events": ["review.decided"]},
    )
    assert response.status_code == 400
    assert "169.254.169.254 is a link-local address" in response.content.decode()
    assert not Webhook.objects.exists()


def test_the_page_refuses_a_post_without_its_csrf_token(project, project_admin, hook):
    client = Client(enforce_csrf_checks=True)
    client.force_login(project_admin)
    assert client.post(page(project), {"action": "delete", "hook": hook.pk}).status_code == 403
    assert Webhook.objects.filter(pk=hook.pk).exists()


def test_the_page_disables_enables_rotates_pings_redelivers_and_deletes(
    client, project, project_admin, hook
):
    client.force_login(project_admin)
    assert client.post(page(project), {"action": "disable", "hook": hook.pk}).status_code == 302
    hook.refresh_from_db()
    assert not hook.active
    assert "disabled" in client.get(page(project)).content.decode()
    client.post(page(project), {"action": "enable", "hook": hook.pk})
    hook.refresh_from_db()
    assert hook.active
    old = hook.secret
    rotated = client.post(page(project), {"action": "rotate", "hook": hook.pk})
    hook.refresh_from_db()
    assert hook.secret != old and hook.secret in rotated.content.decode()
    client.post(page(project), {"action": "ping", "hook": hook.pk})
    ping = WebhookDelivery.objects.get(webhook=hook)
    assert ping.event == "ping"
    WebhookDelivery.objects.filter(pk=ping.pk).update(status="failed", attempts=1)
    listed = client.get(page(project)).content.decode()
    assert "failed" in listed and "Redeliver" in listed
    client.post(page(project), {"action": "redeliver", "delivery": ping.pk})
    ping.refresh_from_db()
    assert (ping.status, ping.attempts) == ("pending", 0)
    assert client.post(page(project), {"action": "delete", "hook": "9" * 30}).status_code == 404
    client.post(page(project), {"action": "delete", "hook": hook.pk})
    assert not Webhook.objects.exists()


def test_the_page_does_not_touch_another_projects_hook(
    client, project, project_admin, other_project
):
    theirs = webhook_create(project=other_project, url=PUBLIC_URL, events=["review.decided"])
    client.force_login(project_admin)
    assert client.post(page(project), {"action": "delete", "hook": theirs.pk}).status_code == 404
    delivery = webhook_ping(theirs)
    response = client.post(page(project), {"action": "redeliver", "delivery": delivery.pk})
    assert response.status_code == 404
    assert Webhook.objects.filter(pk=theirs.pk).exists()


def test_the_api_adds_lists_changes_and_deletes_hooks(client, project, project_admin):
    client.force_login(project_admin)
    made = client.post(
        api(project),
        {"url": PUBLIC_URL, "events": ["review.decided", "item.completed"]},
        content_type="application/json",
    )
    assert made.status_code == 201
    secret, hook_id = made.json()["secret"], made.json()["id"]
    assert secret.startswith("whsec_")
    listed = client.get(api(project)).json()
    assert [h["events"] for h in listed] == [["item.completed", "review.decided"]]
    assert "secret" not in listed[0]
    changed = client.patch(
        api(project, hook_id),
        {"events": ["dataset_version.created"], "active": False, "rotate_secret": True},
        content_type="application/json",
    ).json()
    assert changed["events"] == ["dataset_version.created"] and changed["active"] is False
    assert changed["secret"] != secret
    assert "secret" not in client.get(api(project, hook_id)).json()
    bad = client.post(
        api(project),
        {"url": "http://[::1]/", "events": ["item.completed"]},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "loopback" in bad.json()["url"][0]
    unknown = client.patch(
        api(project, hook_id), {"events": ["everything"]}, content_type="application/json"
    )
    assert unknown.status_code == 400
    assert client.delete(api(project, hook_id)).status_code == 204
    assert not Webhook.objects.exists()


def test_the_api_lists_a_hooks_deliveries_with_their_attempts(client, project, project_admin, hook):
    webhook_ping(hook)
    client.force_login(project_admin)
    (delivery,) = client.get(api(project, hook.pk, "deliveries")).json()
    assert delivery["event"] == "ping" and delivery["status"] == "pending"
    assert delivery["attempt_log"] == []
    assert delivery["payload"]["data"]["webhook"]["id"] == hook.pk


def test_the_admin_lists_hooks_and_deliveries_without_the_secret(client, superuser, hook):
    webhook_ping(hook)
    client.force_login(superuser)
    listing = client.get(reverse("admin:annotations_webhook_changelist"))
    assert listing.status_code == 200 and PUBLIC_URL in listing.content.decode()
    opened = client.get(reverse("admin:annotations_webhook_change", args=[hook.pk]))
    assert opened.status_code == 200 and hook.secret not in opened.content.decode()
    deliveries = client.get(reverse("admin:annotations_webhookdelivery_changelist"))
    assert deliveries.status_code == 200
    client.post(
        reverse("admin:annotations_webhook_changelist"),
        {"action": "disable", "_selected_action": [hook.pk]},
    )
    hook.refresh_from_db()
    assert not hook.active

"""Schema-based fuzzing of the whole API (schemathesis): every operation of the OpenAPI schema the
app serves gets valid and invalid requests, as a project admin of a seeded project (and an
annotator), through the WSGI application in-process. No answer may be a server error (5xx) and
every answer must match the schema. A bounded number of examples per operation keeps the run to
a couple of minutes; a new endpoint is fuzzed as soon as it is in the schema.

Path parameters mostly point at the seeded objects (a random id would only ever meet 404s)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from knox.models import AuthToken
from rest_framework.throttling import ScopedRateThrottle
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from annotations import queue
from annotations.models import Membership, Review
from annotations.services import annotation_submit, project_set_overlap
from annotations.webhooks import safety as webhook_safety
from annotations.webhooks.models import Webhook
from curation.dataset_versions import version_request
from tests.conftest import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords")]

# The schema exactly as /api/schema/ serves it (tests/test_openapi.py checks that endpoint).
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = get_wsgi_application()

# Per operation and role; API_FUZZ_EXAMPLES=200 for a deeper run by hand.
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "10"))


class Seeded:
    """A project with items, answers that disagree (so reviews and gold labels exist), a
    dataset version, a webhook, and a token per role."""

    def __init__(self, project) -> None:
        self.project = project_set_overlap(project, 2)
        roles = {
            "annotator": Membership.Role.ANNOTATOR,
            "reviewer": Membership.Role.REVIEWER,
            "admin": Membership.Role.ADMIN,
        }
        self.users = {}
        for name, role in roles.items():
            user = make_user(f"fuzz-{name}")
            Membership.objects.create(project=self.project, user=user, role=role)
            self.users[name] = user
        a, b = self.users["annotator"], self.users["reviewer"]
        for _ in range(3):
            (item,) = queue.next_items(project=self.project, user=a, count=1)
            annotation_submit(item=item, annotator=a, labels=["positive"], client_uuid=uuid.uuid4())
            item = queue.next_items(project=self.project, user=b, count=1, exclude=frozenset())[0]
            annotation_submit(item=item, annotator=b, labels=["negative"], client_uuid=uuid.uuid4())
        self.items = list(self.project.items.order_by("pk").values_list("pk", flat=True))
        reviews = Review.objects.filter(project=self.project)
        self.reviews = list(reviews.values_list("pk", flat=True))
        self.version = version_request(self.project, author=self.users["admin"], name="v1").name
        hook = Webhook.objects.create(
            project=self.project, url="https://hooks.example.test/in", events=[], secret="s" * 32
        )
        self.hooks = [hook.pk]
        self.tokens = {n: AuthToken.objects.create(user=u)[1] for n, u in self.users.items()}

    def aim(self, case) -> None:
        """Point the generated path parameters at seeded objects, three times in four."""
        params = case.path_parameters or {}
        targets = {"item_pk": self.items, "review_pk": self.reviews, "hook_pk": self.hooks}
        for name, value in params.items():
            if name == "id":
                params[name] = self.project.pk
            elif name in targets and isinstance(value, int) and value % 4 and targets[name]:
                params[name] = targets[name][value % len(targets[name])]
            elif name == "name" and isinstance(value, str) and len(value) % 4:
                params[name] = self.version


def _loopback_only(host: str, port: int, *args, **kwargs) -> list:
    if host not in ("localhost", "127.0.0.1"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test)")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@pytest.fixture
def seeded(project, settings, monkeypatch) -> Iterator[Seeded]:
    settings.ALLOWED_HOSTS = ["localhost"]  # the host schemathesis' WSGI client sends
    # Past the throttles (tests/test_abuse_settings.py tests them), to reach the views.
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "token", "100000/min")
    # Webhook URLs are resolved when saved: no name lookup leaves this machine.
    monkeypatch.setattr(webhook_safety, "getaddrinfo", _loopback_only)
    # As Django's test client does: a request must not close the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield Seeded(project)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.parametrize("role", ["admin", "annotator"])
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_api_operation_answers_with_a_server_error(case, seeded, role):
    seeded.aim(case)
    case.call_and_validate(
        headers={"Authorization": f"Token {seeded.tokens[role]}"},
        checks=CHECKS,
    )


def test_a_tie_in_the_data_browser_matches_the_schema(seeded):
    """Found by the fuzzer: a tie's gold label has no labels (null), which the schema of the
    data browser's rows did not allow."""
    case = schema["/api/projects/{id}/data/"]["GET"].Case(path_parameters={"id": seeded.project.pk})
    response = case.call_and_validate(
        headers={"Authorization": f"Token {seeded.tokens['admin']}"}, checks=CHECKS
    )
    ties = [row for row in response.json()["results"] if (row["gold"] or {}).get("source") == "tie"]
    assert ties and all(row["gold"]["labels"] is None for row in ties)

"""Authorization of every route, generated from the URL configuration.

Each route found by walking the URLconf is requested with every method as five actors:
anonymous, an outsider (admin of another project only), and the project's annotator, reviewer
and admin. What each must get comes from `EXPECT`, keyed by URL name. A route missing from
`EXPECT` fails, so a new view cannot ship without someone deciding who may use it.

To teach the test a new route: add its URL name to `EXPECT` with the methods it answers and
who may use it; if its URL takes a new kwarg, add a filler to `KWARG_FILLERS`.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.auth.views import redirect_to_login
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from PIL import Image

from annotations.models import Item, ItemLease, Membership, PredictionEndpoint, Project, Review
from annotations.preannotations import parse_vector, vectors_save
from annotations.review import review_flag
from annotations.services import project_set_overlap
from annotations.webhooks.models import Webhook
from annotations.webhooks.services import webhook_create
from curation.dashboard_models import DashboardState
from curation.dataset_versions import version_create
from tests.conftest import submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

# Who may use a route. Project roles are the Membership roles; the markers are for routes
# outside any project.
PUBLIC = "public"  # anyone, logged in or not (login page, home redirect)
LOGGED_IN = "logged_in"  # any authenticated user; the view itself scopes what they see
# Site admins and users given "Can add project" (none of the project roles here have it).
CREATORS = "creators"
ANY_MEMBER = frozenset({"annotator", "reviewer", "admin"})
REVIEWER_UP = frozenset({"reviewer", "admin"})
ADMIN_ONLY = frozenset({"admin"})

GET = frozenset({"GET"})
POST = frozenset({"POST"})
GET_POST = frozenset({"GET", "POST"})
READ_WRITE = frozenset({"GET", "PUT", "PATCH", "DELETE"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# A site admin (superuser) is a member of no project, and acts as project admin in all of them.
ACTORS = ("anonymous", "outsider", "annotator", "reviewer", "project_admin", "site_admin")
ROLE_OF = {
    "annotator": "annotator",
    "reviewer": "reviewer",
    "project_admin": "admin",
    "site_admin": "admin",
}


@dataclass(frozen=True)
class Rule:
    """`methods` the route answers; `who` may use it (PUBLIC, LOGGED_IN, or the project roles
    allowed). `kwargs` overrides which fixture object fills a URL kwarg for this route."""

    methods: frozenset[str]
    who: str | frozenset[str]
    kwargs: dict[str, str] = field(default_factory=dict)
    csrf_exempt_reason: str = ""  # set only for routes that take no cookie-based auth
    # Who may use the methods that write (all but GET), when that differs from `who`.
    writers: str | frozenset[str] | None = None

    def who_for(self, method: str) -> str | frozenset[str]:
        return self.writers if self.writers is not None and method != "GET" else self.who


EXPECT: dict[str, Rule] = {
    # Site
    "home": Rule(frozenset(METHODS), PUBLIC),  # a RedirectView: redirects whatever the method
    "login": Rule(frozenset({"GET", "POST", "PUT"}), PUBLIC),  # Django's FormView takes PUT too
    "logout": Rule(POST, PUBLIC),
    # Passwords (Django's views): change when logged in, reset by email for anyone
    "password_change": Rule(frozenset({"GET", "POST", "PUT"}), LOGGED_IN),
    "password_change_done": Rule(GET, LOGGED_IN),
    "password_reset": Rule(frozenset({"GET", "POST", "PUT"}), PUBLIC),
    "password_reset_done": Rule(GET, PUBLIC),
    # A link that is not valid shows "Link no longer valid" whatever the method.
    "password_reset_confirm": Rule(frozenset(METHODS), PUBLIC),
    "password_reset_complete": Rule(GET, PUBLIC),
    # Projects and the annotate page
    "project_list": Rule(GET, LOGGED_IN),
    "project_new": Rule(GET_POST, CREATORS),
    "project_detail": Rule(GET, ANY_MEMBER),  # the dashboard for reviewers and project admins
    "project_dashboard_plot": Rule(GET, REVIEWER_UP),
    "annotate": Rule(GET, ANY_MEMBER),
    "annotate_next": Rule(GET, ANY_MEMBER),
    "annotate_submit": Rule(POST, ANY_MEMBER),
    "annotate_heartbeat": Rule(POST, ANY_MEMBER),
    "annotate_item": Rule(GET, ANY_MEMBER),
    "item_image": Rule(GET, ANY_MEMBER),
    # Import and export
    "project_import": Rule(GET_POST, ADMIN_ONLY),
    # Managing the project: settings, members, item assignments
    "project_settings": Rule(GET_POST, ADMIN_ONLY),
    "project_label_classes": Rule(GET_POST, ADMIN_ONLY),
    "project_members": Rule(GET_POST, ADMIN_ONLY),
    "project_assignments": Rule(GET_POST, ADMIN_ONLY),
    "project_export_jsonl": Rule(GET, REVIEWER_UP),
    "project_export_csv": Rule(GET, REVIEWER_UP),
    "project_export": Rule(GET, REVIEWER_UP),  # other tools' formats (Label Studio, doccano)
    # Quality: agreement and annotator accuracy
    "project_quality": Rule(GET, REVIEWER_UP),
    # The API (DRF): anonymous gets 401/403 instead of a login redirect
    # Username + password in, token out: no cookie is read or set, so there is nothing to forge.
    "api-token": Rule(POST, PUBLIC, csrf_exempt_reason="password in, token out; no cookies"),
    # Lists only the caller's projects; creating one is for site admins and those allowed to.
    "api-project-list": Rule(GET_POST, LOGGED_IN, writers=CREATORS),
    "api-project-detail": Rule(frozenset({"GET", "PATCH"}), ANY_MEMBER, writers=ADMIN_ONLY),
    # Setting a project up: members read its classes, its project admins change them and members
    "api-class-list": Rule(GET_POST, ANY_MEMBER, writers=ADMIN_ONLY),
    "api-class-detail": Rule(frozenset({"GET", "PATCH", "DELETE"}), ANY_MEMBER, writers=ADMIN_ONLY),
    "api-member-list": Rule(GET_POST, ADMIN_ONLY),
    "api-member-detail": Rule(frozenset({"GET", "PATCH", "DELETE"}), ADMIN_ONLY),
    "api-item-list": Rule(GET, ANY_MEMBER),
    "api-item-image": Rule(GET, ANY_MEMBER),
    "api-next-items": Rule(GET, ANY_MEMBER),
    "api-annotation-list": Rule(GET_POST, ANY_MEMBER),
    "api-agreement": Rule(GET, REVIEWER_UP),  # annotators never see each other's work
    "api-quality": Rule(GET, REVIEWER_UP),
    "api-project-dashboard": Rule(GET, REVIEWER_UP),
    # Review: reviewers and project admins
    "item_flag": Rule(POST, REVIEWER_UP),
    "review": Rule(GET, REVIEWER_UP),
    "review_heartbeat": Rule(POST, REVIEWER_UP),
    "review_detail": Rule(GET, REVIEWER_UP),
    "review_decide": Rule(POST, REVIEWER_UP),
    "review_skip": Rule(POST, REVIEWER_UP),
    "review_reopen": Rule(POST, REVIEWER_UP),
    "api-review-list": Rule(GET, REVIEWER_UP),
    "api-review-next": Rule(POST, REVIEWER_UP),
    "api-review-detail": Rule(GET, REVIEWER_UP),
    "api-review-decision": Rule(POST, REVIEWER_UP),
    "api-review-reopen": Rule(POST, REVIEWER_UP),
    "api-item-flag": Rule(POST, REVIEWER_UP),
    # Duplicates: reviewers and project admins
    "api-duplicate-list": Rule(GET, REVIEWER_UP),
    "api-duplicates-review": Rule(POST, REVIEWER_UP),
    # Data analyses and likely label errors: reviewers run them and judge flags; project
    # admins send the top N to review
    "project_analyses": Rule(GET, REVIEWER_UP),
    "project_analysis_run": Rule(POST, REVIEWER_UP),
    "project_label_errors_review": Rule(POST, ADMIN_ONLY),
    "item_label_issue_dismiss": Rule(POST, REVIEWER_UP),
    "api-analysis-runs": Rule(GET, REVIEWER_UP),
    "api-analysis-run": Rule(POST, REVIEWER_UP),
    "api-label-errors": Rule(GET, REVIEWER_UP),
    "api-label-errors-review": Rule(POST, ADMIN_ONLY),
    "api-label-issue-dismiss": Rule(POST, REVIEWER_UP),
    # The data browser: reviewers and project admins
    "project_data": Rule(GET, REVIEWER_UP),
    "project_data_count": Rule(GET, REVIEWER_UP),
    "project_data_item": Rule(GET, REVIEWER_UP),
    "api-data-list": Rule(GET, REVIEWER_UP),
    "api-data-item": Rule(GET, REVIEWER_UP),
    # Bulk actions (assign and delete are refused to reviewers inside, by action)
    "items_bulk": Rule(POST, REVIEWER_UP),
    "items_export_selection": Rule(GET, REVIEWER_UP),
    "api-item-actions": Rule(POST, REVIEWER_UP),
    "api-item-export": Rule(GET, REVIEWER_UP),
    "api-export": Rule(GET, REVIEWER_UP),
    "api-item-import": Rule(POST, ADMIN_ONLY),
    # Dataset versions: reviewers and project admins save, read, download and compare them
    "project_versions": Rule(GET_POST, REVIEWER_UP),
    "project_versions_diff": Rule(GET, REVIEWER_UP),
    "project_version_detail": Rule(GET, REVIEWER_UP),
    "project_version_download": Rule(GET, REVIEWER_UP),
    "api-version-list": Rule(GET_POST, REVIEWER_UP),
    "api-version-diff": Rule(GET, REVIEWER_UP),
    "api-version-detail": Rule(GET, REVIEWER_UP),
    "api-version-export": Rule(GET, REVIEWER_UP),
    # The record of those actions
    "project_item_actions": Rule(GET, REVIEWER_UP),
    "api-item-action-log": Rule(GET, REVIEWER_UP),
    # The API's own description: for anyone logged in (it names no project's data)
    "api-schema": Rule(GET, LOGGED_IN),
    "api-docs": Rule(GET, LOGGED_IN),
    # Predictions and vectors from a team's models: members read, project admins write
    "api-prediction-list": Rule(
        frozenset({"GET", "POST", "DELETE"}), ANY_MEMBER, writers=ADMIN_ONLY
    ),
    "api-vector-list": Rule(GET_POST, ANY_MEMBER, writers=ADMIN_ONLY),
    "api-item-vector": Rule(GET, ANY_MEMBER),
    # Webhooks: project admins only (their secrets and targets)
    "project_webhooks": Rule(GET_POST, ADMIN_ONLY),
    "api-webhook-list": Rule(GET_POST, ADMIN_ONLY),
    "api-webhook-detail": Rule(frozenset({"GET", "PATCH", "DELETE"}), ADMIN_ONLY),
    "api-webhook-deliveries": Rule(GET, ADMIN_ONLY),
    "project_prediction_endpoint": Rule(GET_POST, ADMIN_ONLY),
    "api-prediction-endpoint": Rule(frozenset({"GET", "PUT", "DELETE"}), ADMIN_ONLY),
}

# Prefixes of routes tested elsewhere or not views of this app.
SKIPPED_PREFIXES = ("admin/", "^admin/", "static/", "^static/", "media/", "^media/")


# --- Walking the URLconf ----------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str | None  # "namespace:name"
    pattern: str  # as written in the URLconf, for messages
    kwargs: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.name or '<unnamed>'}[{self.pattern}]"


def _kwargs_of(pattern) -> tuple[str, ...]:
    return tuple(pattern.regex.groupindex)


def walk(patterns, prefix: str = "", namespace: str = "", kwargs=()) -> Iterator[Route]:
    for entry in patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if str(entry.pattern).startswith(SKIPPED_PREFIXES):
                continue
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from walk(entry.url_patterns, pattern, ns, kwargs + _kwargs_of(entry.pattern))
        elif isinstance(entry, URLPattern):
            if str(entry.pattern).startswith(SKIPPED_PREFIXES):
                continue
            name = f"{namespace}{entry.name}" if entry.name else None
            yield Route(name, pattern, kwargs + _kwargs_of(entry.pattern))


def all_routes() -> list[Route]:
    seen: dict[str, Route] = {}
    for route in walk(get_resolver().url_patterns):
        seen.setdefault(route.key, route)
    return list(seen.values())


ROUTES = all_routes()


# --- The objects that fill URL kwargs ---------------------------------------------------------


@dataclass
class World:
    project: Project
    other_project: Project
    item: Item  # an image item of `project` every member has answered
    other_item: Item  # an item of another project
    users: dict[str, object]
    review: Review  # `item`, flagged for review
    hook: Webhook  # a webhook of `project`


KWARG_FILLERS: dict[str, Callable[[World], object]] = {
    "pk": lambda w: w.project.pk,
    "project_pk": lambda w: w.project.pk,
    "item_pk": lambda w: w.item.pk,
    "review_pk": lambda w: w.review.pk,
    "fmt": lambda w: "csv",
    "format": lambda w: "json",  # DRF's format-suffix variants of API routes
    "uidb64": lambda w: "MQ",  # a password reset link (not a valid one)
    "token": lambda w: "not-a-token",
    "kind": lambda w: "predictions",  # an analysis
    "name": lambda w: "v1",  # a dataset version
    "plot": lambda w: "progress",  # a dashboard plot
    "class_id": lambda w: w.project.label_classes.get(name="positive").pk,  # in use
    "user_id": lambda w: w.users["annotator"].pk,  # a member
    "hook_pk": lambda w: w.hook.pk,
}
# Fillers a Rule can name in `kwargs` (e.g. {"pk": "item"} for a route whose pk is an item).
NAMED_FILLERS: dict[str, Callable[[World], object]] = {
    "project": lambda w: w.project.pk,
    "item": lambda w: w.item.pk,
}


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def world(
    settings,
    tmp_path,
    project,
    other_project,
    annotator,
    reviewer,
    project_admin,
    outsider,
    superuser,
):
    settings.MEDIA_ROOT = tmp_path
    settings.WEBHOOKS_ALLOW_PRIVATE = True  # the hook's documentation address (no DNS)
    item = Item(project=project, external_id="pic", text="an image item", image_format="PNG")
    item.image_width, item.image_height = 4, 3
    item.image.save("pic.png", ContentFile(png_bytes()), save=False)
    item.save()
    project_set_overlap(project, 3)  # so each of the three may answer it
    for user in (annotator, reviewer, project_admin):
        submit_handed_out(item=item, annotator=user, labels=["positive"], client_uuid=uuid.uuid4())
    item.project = project
    # The site admin holds the item without answering it (annotate_item wants one or the other).
    now = timezone.now()
    ItemLease.objects.create(
        project=project,
        item=item,
        user=superuser,
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    review = review_flag(item=item, user=project_admin, note="check the crop")
    vectors_save(project, [(item.pk, parse_vector([0.5, 0.25]))])
    settings.DATA_DIR = tmp_path
    version_create(project, name="v1")
    # A plot as the worker stores it (rendering the dashboard here would slow every case).
    DashboardState.objects.create(
        project=project,
        refreshed_at=now,
        plots={"progress": '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="3"/>'},
        summary={"plots": ["progress"]},
    )
    # A prediction endpoint, so that its page and API answer with it (not "none set").
    PredictionEndpoint.objects.create(project=project, url="https://203.0.113.8/predict")
    return World(
        project=project,
        other_project=other_project,
        item=item,
        other_item=other_project.items.get(),
        users={
            "anonymous": None,
            "outsider": outsider,
            "annotator": annotator,
            "reviewer": reviewer,
            "project_admin": project_admin,
            "site_admin": superuser,
        },
        review=review,
        hook=webhook_create(
            project=project, url="https://203.0.113.7/h", events=["review.decided"]
        ),
    )


def url_for(route: Route, world: World, **override: object) -> str:
    if route.name is None:
        pytest.fail(f"route {route.pattern!r} has no name; name it and add it to EXPECT")
    rule = EXPECT.get(route.name)
    values: dict[str, object] = {}
    for kwarg in route.kwargs:
        if kwarg in override:
            values[kwarg] = override[kwarg]
        elif rule and kwarg in rule.kwargs:
            values[kwarg] = NAMED_FILLERS[rule.kwargs[kwarg]](world)
        elif kwarg in KWARG_FILLERS:
            values[kwarg] = KWARG_FILLERS[kwarg](world)
        else:
            pytest.fail(
                f"route {route.key} takes the URL kwarg {kwarg!r} that this test cannot fill: "
                f"teach tests/test_authorization.py (KWARG_FILLERS or the route's Rule.kwargs)"
            )
    return reverse(route.name, kwargs=values)


def request(client: Client, method: str, url: str):
    return getattr(client, method.lower())(url)


def is_api(url: str) -> bool:
    """A route of the API proper (the docs page is a page: anonymous goes to the login)."""
    return url.startswith("/api/") and url != "/api/docs/"


def describe(response) -> str:
    where = response.get("Location", "")
    return f"{response.status_code}{' -> ' + where if where else ''}"


REDIRECTS = (301, 302, 303, 307, 308)


def assert_allowed(response, what: str, *, to_login_ok: bool = False) -> None:
    assert response.status_code < 500, what
    assert response.status_code not in (401, 403, 404, 405), (
        f"{what}: refused ({describe(response)})"
    )
    if response.status_code in REDIRECTS and not to_login_ok:
        assert not response["Location"].startswith("/accounts/login/"), f"{what}: sent to login"


def assert_denied_anonymous(response, url: str, what: str) -> None:
    if is_api(url):
        assert response.status_code in (401, 403), f"{what}: got {describe(response)}"
    else:
        assert response.status_code == 302, f"{what}: got {describe(response)}"
        assert response["Location"] == redirect_to_login(url).url, what


# --- The tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.key)
def test_every_route_has_an_authorization_expectation(route: Route):
    assert route.name is not None, f"route {route.pattern!r} has no name; name it"
    assert route.name in EXPECT, (
        f"new route {route.key} has no authorization expectation: add it to EXPECT in "
        f"tests/test_authorization.py"
    )


def test_every_expectation_names_an_existing_route():
    names = {r.name for r in ROUTES}
    stale = sorted(set(EXPECT) - names)
    assert not stale, f"EXPECT lists routes that no longer exist: {stale}"


def test_the_walk_finds_nested_routes_and_skips_admin():
    names = {r.name for r in ROUTES}
    assert {"login", "project_list", "annotate_submit", "item_image"} <= names
    assert not any(r.pattern.startswith(("admin/", "^admin/")) for r in ROUTES)
    annotate_item = next(r for r in ROUTES if r.name == "annotate_item")
    assert annotate_item.kwargs == ("pk", "item_pk")


CASES = [
    pytest.param(route, method, actor, id=f"{route.key}-{method}-{actor}")
    for route in ROUTES
    for method in METHODS
    for actor in ACTORS
]


@pytest.mark.parametrize(("route", "method", "actor"), CASES)
def test_route_answers_each_actor_as_its_role_allows(client, world, route, method, actor):
    rule = EXPECT.get(route.name or "")
    if rule is None:
        pytest.fail(f"new route {route.key} has no authorization expectation (EXPECT)")
    url = url_for(route, world)
    user = world.users[actor]
    if user is not None:
        client.force_login(user)
    response = request(client, method, url)
    what = f"{actor} {method} {url}"
    method_ok = method in rule.methods
    who = rule.who_for(method)

    if who == PUBLIC:
        if method_ok:
            assert_allowed(response, what, to_login_ok=True)
        else:  # e.g. the login page sends a logged-in user on before looking at the method
            assert response.status_code in (405, *REDIRECTS), f"{what}: got {describe(response)}"
        return
    if actor == "anonymous":
        if not method_ok and response.status_code == 405:
            return  # refusing the method before asking for a login is fine
        assert_denied_anonymous(response, url, what)
        return
    if who == LOGGED_IN:
        if method_ok:
            assert_allowed(response, what)
        else:
            assert response.status_code == 405, f"{what}: got {describe(response)}"
        return
    if who == CREATORS:
        if actor != "site_admin":
            assert response.status_code in ({403} if method_ok else {403, 405}), what
        elif method_ok:
            assert_allowed(response, what)
        else:
            assert response.status_code == 405, f"{what}: got {describe(response)}"
        return
    assert isinstance(who, frozenset), f"EXPECT[{route.name!r}].who is not understood"
    if actor == "outsider":
        expected = {404} if method_ok else {404, 405}
    elif ROLE_OF[actor] not in who:
        expected = {403} if method_ok else {403, 405}
    else:
        if method_ok:
            assert_allowed(response, what)
            return
        expected = {405}
    assert response.status_code in expected, f"{what}: got {describe(response)}, want {expected}"


ITEM_ROUTES = [r for r in ROUTES if "item_pk" in r.kwargs]


@pytest.mark.parametrize("route", ITEM_ROUTES, ids=lambda r: r.key)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_item_of_another_project_is_not_found_through_a_project_url(
    client, world, route, method
):
    """A member of project A asking for project B's item under A's URL gets 404, not the item."""
    client.force_login(world.users["project_admin"])
    url = url_for(route, world, item_pk=world.other_item.pk)
    response = request(client, method, url)
    assert response.status_code in (404, 405), f"{method} {url}: got {describe(response)}"
    assert b"secret text of another team" not in response.content


def _csrf_exempt(route) -> bool:
    rule = EXPECT.get(route.name or "")
    return rule is not None and bool(rule.csrf_exempt_reason)


def test_only_the_token_endpoint_is_csrf_exempt(client):
    """The one route without CSRF takes a password and sets no cookie; a POST to it without a
    token is refused for its missing credentials, not for CSRF."""
    assert [r.name for r in ROUTES if _csrf_exempt(r)] == ["api-token"]
    response = Client(enforce_csrf_checks=True).post("/api/auth/token/", {})
    assert response.status_code == 400, describe(response)
    assert b"CSRF" not in response.content


@pytest.mark.parametrize("route", [r for r in ROUTES if not _csrf_exempt(r)], ids=lambda r: r.key)
def test_a_post_without_csrf_token_is_refused_on_every_route(world, route):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["project_admin"])
    url = url_for(route, world)
    response = client.post(url)
    assert response.status_code == 403, f"POST {url} without CSRF token: {describe(response)}"
    assert b"CSRF" in response.content, f"POST {url} was refused, but not for CSRF"


def test_the_same_post_with_the_csrf_token_goes_through(world):
    """The control for the CSRF test above: the refusal is the missing token, nothing else."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["annotator"])
    page = client.get(reverse("annotate", args=[world.project.pk]))
    token = page.cookies["csrftoken"].value
    response = client.post(
        reverse("annotate_heartbeat", args=[world.project.pk]), HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 204


def test_a_membership_change_takes_effect_at_once(client, world):
    """Roles are read on every request, not cached in the session."""
    client.force_login(world.users["annotator"])
    url = reverse("annotate", args=[world.project.pk])
    assert client.get(url).status_code == 200
    Membership.objects.filter(project=world.project, user=world.users["annotator"]).delete()
    assert client.get(url).status_code == 404

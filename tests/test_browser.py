"""The annotate page in a real browser: Debian's Chromium driven by Playwright against the live
server, with the database checked after every flow.

pytest-django's live server is a plain threaded WSGI server, so the project websocket cannot
connect there; the page has to work without it (it only adds live progress). The model-in-the-loop
test runs the real ASGI application under uvicorn instead (`asgi_server`), with the training worker
embedded, so a label trains a model whose version reaches the page over the websocket.
Screenshots go to the test's tmp_path (kept by pytest for a look after a failure); the README's
screenshots in docs/ are made by `python docs/screenshots.py`, never by a test run.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.files.base import ContentFile
from django.db import connection
from django.test import Client
from django.utils import timezone

from annotations import queue
from annotations.models import (
    Annotation,
    AnnotationRevision,
    Item,
    ItemLease,
    LabelClass,
    Membership,
    Project,
)
from annotations.services import add_items_counted, project_create
from curation.models import ModelVersion
from tests.conftest import PASSWORD, add_text_items, make_user, submit_handed_out

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the tests are skipped with the reason (see tests/service_env.py)
    Browser = Page = None
    expect = sync_playwright = None

# On PostgreSQL only: pytest-django's SQLite test database lives in memory, shared between this
# thread and the live server's threads through SQLite's shared cache, where a read here while the
# server writes fails with "database table is locked". (The app itself runs on a SQLite file in
# WAL mode, which has no such problem.)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
CURRENT = "#queue > article.card:not([hidden])"
XSS = '<img src=x onerror="window.__xss=1">'

REVIEWS = [
    "The battery easily lasts two days and the screen is gorgeous. Best phone I've owned.",
    "Arrived with a cracked case and support never answered my emails.",
    "It does what it says. Nothing more, nothing less.",
    "Setup took five minutes and the app is genuinely pleasant to use.",
    "Stopped charging after three weeks. Returned it.",
    "Decent sound for the price, though the bass is a little thin.",
    "The manual is useless, but the device itself works fine once you figure it out.",
    "Absolutely love it — I bought a second one for my parents.",
    "Loud fan, flimsy buttons, and it runs hot. Would not recommend.",
    "Shipping was quick. Haven't used it enough to have an opinion yet.",
    "Exceeded my expectations: solid build and a very sharp camera.",
    "Overpriced for what you get; the older model was better.",
]


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread, while the ORM calls made by these
    # tests are plain synchronous code; allow that here only, so the rest of the suite keeps
    # Django's check against blocking calls from async code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _pages(browser, base_url: str, init_script: str | None = None) -> Iterator[Callable[..., Page]]:
    """Opens pages on `base_url`, each in a fresh browser context, logged in as `user` when
    given. Any uncaught JavaScript error on any page fails the test."""

    def _open(user=None, path: str | None = None, viewport: dict | None = None) -> Page:
        context = browser.new_context(viewport=viewport or VIEWPORT, base_url=base_url)
        context.set_default_timeout(5000)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        if user is not None:
            client = Client()
            client.force_login(user)
            session = client.cookies[settings.SESSION_COOKIE_NAME].value
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": base_url}]
            )
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: in_flight.add(request))
        page.on("requestfinished", lambda request: in_flight.discard(request))
        page.on("requestfailed", lambda request: in_flight.discard(request))
        pages.append(page)
        if path:
            page.goto(path)
        return page

    contexts, pages, errors, in_flight = [], [], [], set()
    yield _open
    # Let requests still on their way finish before the database is emptied for the next test.
    deadline = time.monotonic() + 3
    while in_flight and pages and time.monotonic() < deadline:
        pages[0].wait_for_timeout(25)
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def open_page(browser, live_server) -> Iterator[Callable[..., Page]]:
    """Pages on pytest-django's live server (WSGI: no websocket)."""
    yield from _pages(browser, live_server.url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url(db: dict) -> str:
    quote = urllib.parse.quote
    user = quote(db["USER"] or "")
    if db["PASSWORD"]:
        user += ":" + quote(db["PASSWORD"])
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{user}@{host}:{db['PORT'] or 5432}/{quote(db['NAME'])}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer will do
    except OSError:
        return False


@pytest.fixture
def asgi_server(transactional_db, tmp_path) -> Iterator[str]:
    """The real ASGI application under uvicorn in a subprocess, on the test database, with the
    training worker embedded (in-memory channel layer, started at lifespan startup); yields its
    URL. Test data must be committed to be seen there (the module's transaction=True does so)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ.copy()
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for Playwright in this process only
    env.pop("REDIS_URL", None)
    env.update(
        DATABASE_URL=_database_url(connection.settings_dict),
        TRAINING_WORKER="embedded",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="0",  # static files come from WhiteNoise's finders (STATIC_MANIFEST=0)
        DATA_DIR=str(tmp_path / "data"),
        MEDIA_ROOT=str(tmp_path / "media"),
        LOG_LEVEL="WARNING",
    )
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "dataprep_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "on",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60  # Django's start-up is slow on a loaded machine
        while not _answers(f"{url}/accounts/login/"):
            if server.poll() is not None:
                raise AssertionError(
                    f"uvicorn exited ({server.returncode}):\n{log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not answer at {url}:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        # Shown by pytest when the test failed: the server's side of the story.
        print(f"--- uvicorn log ---\n{log_path.read_text()[-5000:]}")


# Lists the page's websockets in `window.__sockets`, so a test can wait until one is open.
TRACK_SOCKETS = """
const Native = window.WebSocket;
window.__sockets = [];
window.WebSocket = class extends Native {
  constructor(...args) { super(...args); window.__sockets.push(this); }
};
"""


@pytest.fixture
def open_asgi_page(browser, asgi_server) -> Iterator[Callable[..., Page]]:
    """Pages on the ASGI server, where the project websocket works."""
    yield from _pages(browser, asgi_server, init_script=TRACK_SOCKETS)


def annotate_url(project: Project) -> str:
    return f"/projects/{project.pk}/annotate/"


def current_ext_id(page: Page):
    return page.locator(f"{CURRENT} .ext-id")


def choice(page: Page, name: str):
    return page.locator("label.choice").filter(has=page.locator(f'input[value="{name}"]'))


def wait_until(page: Page, condition: Callable[[], bool], what: str, timeout: float = 8) -> None:
    """Poll the database while letting the browser run (route handlers need the event loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        page.wait_for_timeout(40)


def labels_by_external_id(project: Project, user) -> dict[str, list[str] | str]:
    return {
        a.item.external_id: ("skipped" if a.skipped else a.labels)
        for a in Annotation.objects.filter(project=project, annotator=user).select_related("item")
    }


def member(project: Project, username: str, role: str = Membership.Role.ANNOTATOR):
    user = make_user(username)
    Membership.objects.create(project=project, user=user, role=role)
    return user


@pytest.fixture
def reviews(db) -> Project:
    """A text project with real-looking reviews; `neutral` has its own key (u)."""
    project = project_create(
        name="Product reviews",
        description="Customer reviews of consumer electronics, sampled from the support inbox.",
        classes=[("positive", "#2f9e44"), ("negative", "#e03131"), ("neutral", "#868e96")],
        instructions=(
            "Label the overall sentiment of each review.\n"
            "Mixed reviews: choose the side the customer ends on. "
            "Skip (Space) reviews that are not about the product."
        ),
    )
    LabelClass.objects.filter(project=project, name="neutral").update(key="u")
    add_text_items(project, REVIEWS, prefix="review-")
    return project


def digit_images(count: int) -> list[tuple[bytes, int]]:
    """Real handwritten digits (scikit-learn ships them) as PNG bytes, with the true digit."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for pixels, digit in zip(digits.images[:count], digits.target[:count], strict=True):
        grey = (255 - pixels * 255 / 16).clip(0, 255).astype("uint8")
        image = Image.fromarray(grey).resize((32, 32), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append((buffer.getvalue(), int(digit)))
    return out


@pytest.fixture
def digits(db, settings, tmp_path) -> tuple[Project, dict[str, int]]:
    """An image project of handwritten digits, keys 0–9; returns it and each item's digit."""
    settings.MEDIA_ROOT = tmp_path
    project = project_create(
        name="Handwritten digits",
        description="8×8 scans of handwritten digits (scikit-learn's digits dataset).",
        item_kind=Project.ItemKind.IMAGE,
        classes=[str(d) for d in range(10)],
        instructions="Press the digit you see. Skip (Space) if you cannot tell.",
    )
    for label in LabelClass.objects.filter(project=project):
        label.key = label.name
        label.save(update_fields=["key"])
    truth = {}
    for index, (png, digit) in enumerate(digit_images(6)):
        item = Item(
            project=project,
            external_id=f"digit-{index:04d}.png",
            image_format="PNG",
            image_width=32,
            image_height=32,
            priority=1.0 - index * 1e-6,
        )
        item.image.save("digit.png", ContentFile(png), save=False)
        item.save()
        truth[item.external_id] = digit
    add_items_counted(project, len(truth))
    return project, truth


# --- the scenario -----------------------------------------------------------------------


def test_annotator_labels_three_items_by_keyboard_and_corrects_one_after_going_back(
    open_page, reviews, tmp_path
):
    annie = member(reviews, "annie")
    page = open_page()
    page.goto(f"/accounts/login/?next=/projects/{reviews.pk}/annotate/")
    page.fill("#id_username", "annie")
    page.fill("#id_password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{annotate_url(reviews)}")
    expect(page.locator(".instructions-text")).to_contain_text("overall sentiment")
    expect(page.locator("#progress")).to_contain_text("0 of 12 items done")

    expect(current_ext_id(page)).to_have_text("review-0")
    page.keyboard.press("2")  # negative, by its position
    expect(choice(page, "negative")).to_have_class("choice on")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("review-1")
    page.keyboard.press("u")  # neutral, by its own key
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("review-2")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("review-3")

    page.keyboard.press("Backspace")  # back to review-2, answered "positive"
    expect(current_ext_id(page)).to_have_text("review-2")
    expect(page.locator(f"{CURRENT} .tag-edit")).to_be_visible()
    expect(choice(page, "positive")).to_have_class("choice on")
    page.keyboard.press("2")
    expect(choice(page, "positive")).to_have_class("choice")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("review-3")  # the queue carries on

    wait_until(
        page,
        lambda: labels_by_external_id(reviews, annie).get("review-2") == ["negative"],
        "the correction is stored",
    )
    expect(page.locator("#save-status")).to_have_text("Saved.")
    assert labels_by_external_id(reviews, annie) == {
        "review-0": ["negative"],
        "review-1": ["neutral"],
        "review-2": ["negative"],
    }
    revision = AnnotationRevision.objects.get()
    assert revision.annotation.item.external_id == "review-2"
    assert (revision.previous_labels, revision.labels) == (["positive"], ["negative"])
    assert Annotation.objects.filter(time_spent_ms__gt=0).count() == 3
    reviews.refresh_from_db()
    assert reviews.complete_count == 3
    expect(page.locator("#progress")).to_contain_text("3 of 12 items done")
    entries = page.locator("#history a.history-entry")
    expect(entries).to_have_count(3)
    expect(entries.first).to_contain_text("review-2")
    expect(entries.first).to_contain_text("negative")
    expect(page.locator("#history a.history-entry.pending")).to_have_count(0)  # server's copy

    # The README's screenshot: mid-labelling, a label chosen, the history strip filled.
    for number, key in enumerate(["1", "u", "2"], start=4):
        page.keyboard.press(key)
        page.keyboard.press("Enter")
        expect(current_ext_id(page)).to_have_text(f"review-{number}")
    page.keyboard.press("1")
    expect(page.locator("#save-status")).to_have_text("Saved.")
    page.screenshot(path=str(tmp_path / "annotate.png"))


def test_space_skips_an_item_which_is_recorded_and_never_shown_again(open_page, project):
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    page.keyboard.press("Space")
    expect(current_ext_id(page)).to_have_text("t1")
    wait_until(page, lambda: Annotation.objects.filter(skipped=True).exists(), "the skip is saved")
    skip = Annotation.objects.get()
    assert (skip.item.external_id, skip.skipped, skip.labels) == ("t0", True, [])
    project.refresh_from_db()
    assert project.complete_count == 0  # a skip does not complete an item
    expect(page.locator("#history a.history-entry").first).to_contain_text("skipped")

    expect(page.locator("#save-status")).to_have_text("Saved.")

    page.reload()
    expect(current_ext_id(page)).to_have_text("t1")
    assert page.locator(f'#queue article.card[data-item-id="{skip.item_id}"]').count() == 0
    for ext_id in ["t2", "t3"]:
        page.keyboard.press("3")
        page.keyboard.press("Enter")
        expect(current_ext_id(page)).to_have_text(ext_id)
    wait_until(page, lambda: Annotation.objects.count() == 3, "both answers are saved")
    assert labels_by_external_id(project, annie) == {
        "t0": "skipped",
        "t1": ["neutral"],
        "t2": ["neutral"],
    }


def test_an_answer_reopened_from_the_history_strip_by_click_can_be_changed(open_page, project):
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    choice(page, "positive").click()
    page.click("#submit-btn")
    expect(current_ext_id(page)).to_have_text("t1")
    choice(page, "neutral").click()
    page.click("#submit-btn")
    expect(current_ext_id(page)).to_have_text("t2")
    expect(page.locator("#save-status")).to_have_text("Saved.")

    page.locator("#history a.history-entry", has_text="t0").click()
    expect(current_ext_id(page)).to_have_text("t0")
    expect(choice(page, "positive")).to_have_class("choice on")
    choice(page, "negative").click()
    page.click("#submit-btn")
    expect(current_ext_id(page)).to_have_text("t2")
    wait_until(
        page,
        lambda: labels_by_external_id(project, annie).get("t0") == ["negative"],
        "the change is stored",
    )
    assert labels_by_external_id(project, annie) == {"t0": ["negative"], "t1": ["neutral"]}
    assert AnnotationRevision.objects.get().previous_labels == ["positive"]
    expect(page.locator("#history a.history-entry").first).to_contain_text("negative")

    # The strip's entries are plain links too: opened directly they show the whole page there.
    t1 = page.locator("#history a.history-entry", has_text="t1")
    page.goto(t1.get_attribute("href"))
    expect(current_ext_id(page)).to_have_text("t1")
    expect(page.locator(f"{CURRENT} .tag-edit")).to_be_visible()
    expect(choice(page, "neutral")).to_have_class("choice on")
    page.keyboard.press("Enter")  # unchanged: on to the next item, fetched now
    expect(current_ext_id(page)).to_have_text("t2")
    assert AnnotationRevision.objects.count() == 1


def test_going_back_to_an_answer_whose_save_is_still_on_its_way_shows_that_answer(
    open_page, project
):
    """Backspace right after Enter, before the server has the answer: the item opens (the page
    still holds its lease) with the answer given on the page, and changing it stores an edit."""
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    held = []
    page.route("**/annotate/submit/", lambda route: held.append(route))
    expect(current_ext_id(page)).to_have_text("t0")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1")
    wait_until(page, lambda: len(held) == 1, "the save is on its way")
    page.keyboard.press("Backspace")  # back to t0, whose save the server has not received
    # It opens while its save is still held, with the answer given on the page.
    expect(current_ext_id(page)).to_have_text("t0")
    expect(page.locator(f"{CURRENT} .tag-edit")).to_be_visible()
    expect(choice(page, "positive")).to_have_class("choice on")
    assert len(held) == 1 and not labels_by_external_id(project, annie)
    held.pop().continue_()
    page.unroute("**/annotate/submit/")
    wait_until(
        page,
        lambda: labels_by_external_id(project, annie) == {"t0": ["positive"]},
        "the held save is stored",
    )
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1")
    wait_until(
        page,
        lambda: labels_by_external_id(project, annie) == {"t0": ["negative"]},
        "the change is stored",
    )
    assert AnnotationRevision.objects.get().previous_labels == ["positive"]
    expect(page.locator("#save-status")).not_to_contain_text("cannot be opened")


def test_an_image_item_loads_through_the_protected_view_and_is_labelled_by_its_key(
    open_page, digits, live_server, tmp_path
):
    project, truth = digits
    annie = member(project, "annie")
    page = open_page(annie)
    with page.expect_response(lambda r: r.url.endswith("/image/")) as served:
        page.goto(annotate_url(project))
    assert served.value.status == 200
    assert served.value.headers["content-type"] == "image/png"
    assert served.value.headers["x-content-type-options"] == "nosniff"
    image = page.locator(f"{CURRENT} img")
    expect(image).to_be_visible()
    src = image.get_attribute("src")
    assert src.startswith(f"/projects/{project.pk}/items/") and src.endswith("/image/")
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('{CURRENT} img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert image.evaluate("i => i.naturalWidth") == 32

    labelled = []
    for _ in range(3):
        ext_id = current_ext_id(page).inner_text()
        page.keyboard.press(str(truth[ext_id]))
        page.keyboard.press("Enter")
        expect(current_ext_id(page)).not_to_have_text(ext_id)
        labelled.append(ext_id)
    wait_until(page, lambda: Annotation.objects.count() == 3, "three answers are saved")
    assert labels_by_external_id(project, annie) == {e: [str(truth[e])] for e in labelled}
    page.wait_for_function(
        f"() => document.querySelector('{CURRENT} img').naturalWidth > 0"
    )  # the prefetched image was already loaded
    page.keyboard.press(str(truth[current_ext_id(page).inner_text()]))
    expect(page.locator("#save-status")).to_have_text("Saved.")
    page.screenshot(path=str(tmp_path / "annotate-image.png"))

    # The image is only served to members: an anonymous browser gets the login page.
    anonymous = open_page()
    response = anonymous.request.get(live_server.url + src)
    assert "image/png" not in response.headers.get("content-type", "")
    assert "/accounts/login/" in response.url


def test_multi_label_items_store_every_label_toggled_on(open_page):
    project = project_create(
        name="News topics",
        labeling_mode=Project.LabelingMode.MULTI,
        classes=["sports", "politics", "tech", "science"],
    )
    add_text_items(project, ["A football club buys an AI start-up.", "Rain tomorrow."])
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    for key in ["1", "2", "3", "2"]:  # politics toggled on, then off again
        page.keyboard.press(key)
    expect(page.locator("label.choice.on")).to_have_count(2)
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1")
    wait_until(page, lambda: Annotation.objects.exists(), "the answer is saved")
    assert Annotation.objects.get().labels == ["sports", "tech"]
    expect(page.locator("label.choice.on")).to_have_count(0)  # the next item starts blank

    page.keyboard.press("Enter")  # no label: asks first (a double Enter must not answer)
    expect(page.locator("#save-status")).to_contain_text("press Enter again")
    expect(current_ext_id(page)).to_have_text("t1")
    page.keyboard.press("Enter")
    wait_until(page, lambda: Annotation.objects.count() == 2, "the empty answer is saved")
    assert labels_by_external_id(project, annie)["t1"] == []


def test_an_empty_queue_says_so_and_counts_items_leased_to_other_annotators(open_page, project):
    annie = member(project, "annie")
    bob = member(project, "bob")
    Item.objects.filter(project=project).exclude(external_id__in=["t0", "t1", "t2"]).delete()
    queue.next_items(project=project, user=bob, count=2)  # bob holds t0 and t1
    page = open_page(annie, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t2")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    empty = page.locator(f"{CURRENT}.empty")
    expect(empty).to_contain_text("No more items for you right now.")
    expect(empty).to_contain_text("2 items are being labelled by other annotators")
    expect(page.locator("#label-form")).to_have_class("label-bar disabled")
    page.keyboard.press("Enter")  # nothing to submit: nothing happens
    wait_until(page, lambda: Annotation.objects.count() == 1, "the last answer is saved")

    page.eval_on_selector("#annotate", "root => { root.dataset.pollMs = '300'; }")
    page.keyboard.press("Backspace")  # the last answer can still be reopened...
    expect(current_ext_id(page)).to_have_text("t2")
    expect(choice(page, "positive")).to_have_class("choice on")
    page.keyboard.press("Enter")  # ...and left as it was: nothing is sent
    expect(empty).to_contain_text("2 items are being labelled by other annotators")
    assert Annotation.objects.get().item.external_id == "t2"
    assert not AnnotationRevision.objects.exists()

    ItemLease.objects.filter(user=bob, item__external_id="t1").delete()  # bob's lease ends
    expect(current_ext_id(page)).to_have_text("t1")  # the empty page asks again by itself
    expect(page.locator("#label-form")).to_have_class("label-bar")


def test_html_in_item_text_and_label_names_shows_as_text(open_page):
    project = project_create(
        name=f"Payload {XSS}", classes=[XSS, "plain"], instructions=f"Read {XSS} carefully."
    )
    Item.objects.create(project=project, external_id=XSS, text=f"Hello {XSS} world")
    add_items_counted(project, 1)
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    expect(page.locator(f"{CURRENT} .item-text")).to_have_text(f"Hello {XSS} world")
    expect(page.locator(".choice-name").first).to_have_text(XSS)
    expect(page.locator(".instructions-text")).to_contain_text(XSS)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_until(page, lambda: Annotation.objects.exists(), "the answer is saved")
    assert Annotation.objects.get().labels == [XSS]
    expect(page.locator("#history a.history-entry").first).to_contain_text(XSS)
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__xss") is None
    page.goto("/projects/")
    expect(page.locator(".project-name")).to_have_text(f"Payload {XSS}")
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__xss") is None


def test_the_next_item_shows_at_once_while_the_save_is_still_on_its_way(open_page, project):
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    held = []
    page.route("**/annotate/submit/", lambda route: held.append(route))
    expect(current_ext_id(page)).to_have_text("t0")
    page.keyboard.press("1")
    started = time.monotonic()
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1", timeout=200)
    assert time.monotonic() - started < 0.5
    page.keyboard.press("2")  # the annotator keeps working while the save waits
    expect(page.locator("#save-status")).to_have_text("Saving…")
    page.wait_for_timeout(1500)  # the server is slow: 1.5 s
    assert len(held) == 1 and not Annotation.objects.exists()
    held.pop().continue_()
    wait_until(page, lambda: Annotation.objects.exists(), "the held answer is saved")
    expect(page.locator("#save-status")).to_have_text("Saved.")
    expect(choice(page, "negative")).to_have_class("choice on")  # the choice in progress stays
    page.unroute("**/annotate/submit/")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t2")
    wait_until(page, lambda: Annotation.objects.count() == 2, "the second answer is saved")
    assert labels_by_external_id(project, annie) == {"t0": ["positive"], "t1": ["negative"]}


# The page's fetch resolves once a response's headers are in; its body (the next cards) can take
# longer, on a busy server. This stretches that moment so that a test can answer inside it.
SLOW_SUBMIT_BODY = """
const text = Response.prototype.text;
Response.prototype.text = async function () {
  const body = await text.call(this);
  if (this.url.endsWith("/annotate/submit/") && window.__slowBodyMs) {
    await new Promise((resolve) => setTimeout(resolve, window.__slowBodyMs));
  }
  return body;
};
"""


def test_an_answer_given_while_a_save_response_is_still_arriving_never_comes_back(
    open_page, project
):
    """An answer given while the previous save's body was still arriving used to start the next
    save (and a refill) with exclude lists that did not yet name the cards in that body: the
    server handed one of them out twice, and its second copy came back after the annotator had
    answered it (the page "did not move on after Enter", now and then, on a busy machine)."""
    annie = member(project, "annie")
    page = open_page(annie)
    page.add_init_script(SLOW_SUBMIT_BODY)
    page.goto(annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    page.evaluate("window.__slowBodyMs = 800")
    page.keyboard.press("1")
    with page.expect_response("**/annotate/submit/"):
        page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1")
    page.keyboard.press("2")
    page.keyboard.press("Enter")  # while t0's response body is still on its way
    page.evaluate("window.__slowBodyMs = 0")
    for ext_id in ["t2", "t3", "t4"]:
        expect(current_ext_id(page)).to_have_text(ext_id)
        page.keyboard.press("3")
        page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t5")
    wait_until(page, lambda: Annotation.objects.count() == 5, "every answer is saved")
    expect(page.locator("#save-status")).to_have_text("Saved.", timeout=8000)
    queued = page.locator("#queue > article.card .ext-id").all_inner_texts()
    assert not set(queued) & {"t0", "t1", "t2", "t3", "t4"}, queued
    expect(current_ext_id(page)).to_have_text("t5")
    assert not AnnotationRevision.objects.exists()  # nothing was answered twice


def test_a_save_whose_response_is_lost_is_retried_and_stored_once(open_page, project):
    annie = member(project, "annie")
    page = open_page(annie)
    sent = []

    def lose_first_response(route) -> None:
        sent.append(urllib.parse.parse_qs(route.request.post_data)["client_uuid"][0])
        if len(sent) == 1:
            route.fetch()  # the server stores the answer...
            route.abort()  # ...but the browser never hears back
        else:
            route.continue_()

    page.route("**/annotate/submit/", lose_first_response)  # before the page exists, as above
    page.goto(annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1")
    expect(page.locator("#save-status")).to_contain_text("retrying")
    wait_until(page, lambda: len(sent) == 2, "the answer is sent again")
    expect(page.locator("#save-status")).to_have_text("Saved.")
    assert sent[0] == sent[1]  # the same submission id both times
    annotation = Annotation.objects.get()
    assert (annotation.item.external_id, annotation.labels) == ("t0", ["neutral"])
    assert not AnnotationRevision.objects.exists()
    entry = f"#history a.history-entry[data-item-id='{annotation.item_id}']"
    expect(page.locator(entry)).to_have_count(1)


def test_a_save_refused_by_the_network_is_retried_until_it_lands(open_page, project):
    annie = member(project, "annie")
    page = open_page(annie)
    attempts = []

    def drop_first(route) -> None:
        attempts.append(route.request.post_data)
        route.abort() if len(attempts) == 1 else route.continue_()

    # Routed before the page exists: once (1 run in ~25) the first save reached the server
    # without passing this handler when the route was added after the page had loaded.
    page.route("**/annotate/submit/", drop_first)
    page.goto(annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_until(page, lambda: Annotation.objects.exists(), "the retried answer is saved")
    assert len(attempts) == 2, attempts
    assert Annotation.objects.get().item.external_id == "t0"


def test_an_item_another_annotator_took_over_is_refused_with_the_reason_and_the_page_moves_on(
    open_page, project
):
    annie, bob = member(project, "annie"), member(project, "bob")
    page = open_page(annie, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    t0 = Item.objects.get(project=project, external_id="t0")
    # Annie's hold on t0 lapsed (a laptop asleep) and the queue gave it to Bob.
    ItemLease.objects.filter(item=t0, user=annie).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert queue.next_items(project=project, user=bob, count=1) == [t0]
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.url.endswith("/submit/") else None)

    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("t1")
    expect(page.locator("#save-status")).to_contain_text(
        "Item t0 was not saved: Your hold on this item expired and another annotator has it now."
    )
    page.keyboard.press("2")
    page.keyboard.press("Enter")  # the next answer is sent: the refused one is not retried
    wait_until(page, lambda: Annotation.objects.exists(), "the next answer is saved")
    assert labels_by_external_id(project, annie) == {"t1": ["negative"]}
    assert len(posts) == 2


def test_an_open_page_keeps_its_items_leased_through_the_heartbeat(open_page, project, settings):
    settings.LEASE_SECONDS = 15  # the page renews every 5 s
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    before = {lease.item_id: lease.expires_at for lease in ItemLease.objects.filter(user=annie)}
    assert len(before) == 2
    with page.expect_response("**/annotate/heartbeat/", timeout=8000) as heartbeat:
        pass
    assert heartbeat.value.status == 204
    after = {lease.item_id: lease.expires_at for lease in ItemLease.objects.filter(user=annie)}
    assert after.keys() == before.keys()
    assert all(after[i] > before[i] for i in before)


def test_an_ended_session_is_reported_instead_of_losing_answers_silently(open_page, project):
    annie = member(project, "annie")
    page = open_page(annie, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("t0")
    Session.objects.all().delete()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#save-status")).to_contain_text("session has ended")
    expect(page.locator("#save-status")).to_contain_text("1 answer(s) not saved")
    assert not Annotation.objects.exists()


def test_the_project_list_shows_only_my_projects_with_their_progress(
    open_page, project, reviews, tmp_path
):
    annie = member(project, "annie")
    Membership.objects.create(project=reviews, user=annie, role=Membership.Role.REVIEWER)
    project_create(name="Not mine", classes=["a"])
    bob = member(project, "bob")
    for item in Item.objects.filter(project=project).order_by("id")[:7]:
        submit_handed_out(item=item, annotator=bob, labels=["positive"], client_uuid=uuid.uuid4())
    page = open_page(annie, "/projects/")
    rows = page.locator(".project-row")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="Sentiment")).to_contain_text("7 of 20 items labelled (35%)")
    expect(rows.filter(has_text="Product reviews")).to_contain_text("0 of 12 items labelled")
    assert page.locator("text=Not mine").count() == 0
    width = rows.filter(has_text="Sentiment").locator(".bar").evaluate("b => b.style.width")
    assert width == "35%"
    page.screenshot(path=str(tmp_path / "projects.png"))


def test_the_annotate_page_is_usable_in_an_800_pixel_wide_window(open_page, reviews):
    annie = member(reviews, "annie")
    page = open_page(annie, annotate_url(reviews), viewport={"width": 800, "height": 800})
    expect(current_ext_id(page)).to_have_text("review-0")
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    for element in ["label.choice >> nth=2", "#submit-btn", "#skip-btn", "#back-btn"]:
        box = page.locator(element).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 800, element
        assert box["y"] + box["height"] <= 800, f"{element} is below the fold"
    choice(page, "neutral").click()
    page.click("#submit-btn")
    expect(current_ext_id(page)).to_have_text("review-1")


# --- the model in the loop, over the websocket --------------------------------------------------

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
}
MODEL_EVENT_MS = 15_000  # a label → the worker trains → the page hears it; generous under load


@pytest.fixture
def two_word_families(db) -> Project:
    """A text project whose classes are told apart by their words (as in test_worker.py)."""
    project = project_create(name="Two word families", classes=list(WORDS))
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[(i + 1) % 6]} thing {i}" for i in range(12)]
        add_text_items(project, lines, prefix=f"{name}-")
    return project


def test_each_label_trains_a_model_whose_version_the_page_shows_live_until_it_suggests(
    open_asgi_page, two_word_families, tmp_path
):
    project = two_word_families
    classes = list(WORDS)
    annie = member(project, "annie")
    page = open_asgi_page(annie, annotate_url(project))
    model = page.locator("#model")
    version = model.locator("[data-model-version]")
    labels_used = model.locator("[data-model-labels]")
    state = model.locator("[data-model-state]")
    expect(version).to_have_text("none yet")
    expect(labels_used).to_have_text("0")
    expect(state).to_have_text("Trains after the first label.")
    # The model event is a broadcast: the page hears it only if its socket is in the group.
    page.wait_for_function(
        "() => window.__sockets.some((ws) => ws.readyState === WebSocket.OPEN)",
        timeout=MODEL_EVENT_MS,
    )
    page.evaluate("window.__notReloaded = true")
    counts: Counter[str] = Counter()

    def label_the_current_item() -> None:
        ext_id = current_ext_id(page).inner_text()
        name = ext_id.rsplit("-", 1)[0]
        page.keyboard.press(str(classes.index(name) + 1))
        page.keyboard.press("Enter")
        expect(current_ext_id(page)).not_to_have_text(ext_id)
        counts[name] += 1

    label_the_current_item()
    expect(version).to_have_text("1", timeout=MODEL_EVENT_MS)
    expect(labels_used).to_have_text("1")
    expect(model).to_have_attribute("data-model-version", "1")
    expect(state).to_contain_text("Learning")  # one class seen: nothing to rank with yet
    needs = model.locator("[data-model-needs]")
    seen = next(c for c in classes if counts[c])
    unseen = next(c for c in classes if not counts[c])
    expect(needs).to_be_visible()
    expect(needs).to_contain_text("The model needs examples of: ")
    expect(needs).to_contain_text(f"{seen} (1/3)")
    expect(needs).to_contain_text(f"{unseen} (0/3)")
    assert page.evaluate("window.__notReloaded") is True

    while min(counts[name] for name in classes) < 3:  # the model warms up at 3 labels a class
        label_the_current_item()
        expect(labels_used).to_have_text(str(counts.total()), timeout=MODEL_EVENT_MS)
    expect(state).to_have_text(
        "Ranking the queue: most informative items first.", timeout=MODEL_EVENT_MS
    )
    warm_at = counts.total()
    expect(needs).to_be_hidden()  # every class has its 3 labels: the line goes away

    # Cards already on the page were served by the cold model; the next ones carry its guess.
    suggestion = page.locator(f"{CURRENT} .suggest")
    for _ in range(6):
        if suggestion.is_visible():
            break
        label_the_current_item()
        expect(labels_used).to_have_text(str(counts.total()), timeout=MODEL_EVENT_MS)
    expect(suggestion).to_be_visible()
    # Not necessarily right: the ranking serves the items the model is least sure about first.
    guess = suggestion.locator("b").inner_text()
    assert guess in classes
    suggested = page.locator("label.choice.suggested")
    expect(suggested).to_have_count(1)
    expect(suggested.locator("input")).to_have_value(guess)
    page.screenshot(path=str(tmp_path / "annotate-model.png"))
    expect(page.locator("label.choice.on")).to_have_count(0)  # highlighted, not chosen
    assert page.evaluate("window.__notReloaded") is True

    wait_until(
        page,
        lambda: Annotation.objects.filter(project=project).count() == counts.total(),
        "every answer is saved",
    )
    versions = list(
        ModelVersion.objects.filter(project=project)
        .order_by("version")
        .values_list("version", "labels_used")
    )
    assert versions[0] == (1, 1)
    assert [v for v, _ in versions] == list(range(1, len(versions) + 1))
    assert versions[-1][1] == counts.total()
    assert any(used == warm_at for _, used in versions)
    assert ModelVersion.objects.get(project=project, version=len(versions)).metrics["cold"] is False
    expect(version).to_have_text(str(len(versions)))

"""Make the README's screenshots: `python docs/screenshots.py` (writes docs/*.png).

The test suite never writes under docs/; this command is the one place the pictures come from.
It sets up the demo (`manage.py demo`'s projects and accounts: airline tweets and handwritten
digits) in a fresh temporary data directory (SQLite), has the two demo annotators answer some
tweets — annotator2 now and then differently, so the review queue and the quality page have
something to show —, serves the app with the dev server the demo uses (training worker embedded),
and drives Chromium through Playwright (the test extras: `pip install -e '.[test]'`).

    python docs/screenshots.py [--output DIR] [--chromium PATH] [--keep]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = {"width": 1280, "height": 800}
CURRENT = "#queue > article.card:not([hidden])"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
#: Tweets each demo annotator answers before the pictures are taken; every DISAGREE-th answer of
#: annotator2 differs from the data set's label (those tweets go to review).
PRELABELLED = 60
DISAGREE = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs", help="Folder for the PNGs.")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--keep", action="store_true", help="Keep the temporary data directory.")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        parser.error("Playwright is missing: pip install -e '.[test]'")

    data_dir = Path(tempfile.mkdtemp(prefix="dataprepops-screenshots-"))
    env = _demo_environment(data_dir)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from annotations.demo import seed_demo

    try:
        print(f"Setting up the demo in {data_dir}…")
        call_command("migrate", interactive=False, verbosity=0)
        projects = {p.name: p for p in seed_demo().projects}
        _answer_some_tweets(projects["Airline tweets: sentiment"])
        _save_a_version(projects["Airline tweets: sentiment"])
        args.output.mkdir(parents=True, exist_ok=True)
        with _server(env, data_dir) as base_url, sync_playwright() as playwright:
            # Playwright's sync API runs an event loop in this thread; the ORM calls made here
            # (logins, ground truth) are plain synchronous code. This process only, not the server.
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                shots = Shots(browser, base_url, args.output)
                shots.projects()
                shots.annotate(projects["Airline tweets: sentiment"])
                shots.annotate_image(projects["Handwritten digits"])
                shots.annotate_model(projects["Airline tweets: sentiment"])
                shots.review(projects["Airline tweets: sentiment"])
                shots.quality(projects["Airline tweets: sentiment"])
                shots.versions(projects["Airline tweets: sentiment"])
                shots.dashboard(projects["Airline tweets: sentiment"])
            finally:
                browser.close()
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def _demo_environment(data_dir: Path) -> dict[str, str]:
    """The demo's configuration: DEBUG, SQLite and the in-memory channel layer in `data_dir`."""
    for name in ("DATABASE_URL", "REDIS_URL", "TRAINING_WORKER", "MEDIA_ROOT", "STATIC_ROOT"):
        os.environ.pop(name, None)
    return {
        "DJANGO_SETTINGS_MODULE": "dataprep_site.settings",
        "DEBUG": "1",
        "DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
    }


def _answer_some_tweets(project) -> None:
    """annotator1 answers PRELABELLED tweets as the data set labels them; annotator2 answers the
    same tweets (the queue serves partly answered items first), differing on every DISAGREE-th."""
    from django.contrib.auth import get_user_model

    from annotations.demo import airline_tweets
    from annotations.queue import next_items
    from annotations.services import annotation_submit

    # No worker reads this process's in-memory channel layer (the server's worker trains from
    # the database when it starts), so its training requests pile up and are refused: expected.
    logging.getLogger("curation.training_requests").setLevel(logging.ERROR)
    truth = {t.external_id: t.label for t in airline_tweets()}
    classes = project.class_names()
    users = get_user_model().objects.in_bulk(["annotator1", "annotator2"], field_name="username")
    for n, username in enumerate(["annotator1", "annotator2"]):
        for index, item in enumerate(
            next_items(project=project, user=users[username], count=PRELABELLED)
        ):
            label = truth[item.external_id]
            if n == 1 and index % DISAGREE == 0:
                label = classes[(classes.index(label) + 1) % len(classes)]
            annotation_submit(
                item=item, annotator=users[username], labels=[label], client_uuid=uuid.uuid4()
            )


class _server:
    """`manage.py runserver` (Daphne, as `manage.py demo` serves) on a free port."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"} | env
        self.log = data_dir / "server.log"

    def __enter__(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not _answers(f"{url}/accounts/login/"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"The server did not start:\n{self.log.read_text()}")
            time.sleep(0.2)
        return url

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _save_a_version(project) -> None:
    """A dataset version of the answers so far (the worker measures its model once serving)."""
    from curation.dataset_versions import version_create

    version_create(project, name="first-answers", note="The demo annotators' first answers.")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Shots:
    """One method per picture; each opens its pages logged in as a demo account."""

    def __init__(self, browser, base_url: str, output: Path) -> None:
        self.browser = browser
        self.base_url = base_url
        self.output = output

    def page(self, username: str, path: str):
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client

        client = Client()
        client.force_login(get_user_model().objects.get(username=username))
        context = self.browser.new_context(viewport=VIEWPORT, base_url=self.base_url)
        context.set_default_timeout(20_000)
        name = settings.SESSION_COOKIE_NAME
        context.add_cookies(
            [{"name": name, "value": client.cookies[name].value, "url": self.base_url}]
        )
        page = context.new_page()
        page.goto(path)
        return page

    def save(self, page, name: str, **options: object) -> None:
        path = self.output / name
        page.screenshot(path=str(path), **options)
        page.context.close()
        print(f"wrote {path}")

    def projects(self) -> None:
        page = self.page("annotator1", "/projects/")
        page.locator(".project-row").first.wait_for()
        self.save(page, "projects.png")

    def annotate(self, project) -> None:
        """Mid-labelling: three answers in the history strip, a label chosen for the fourth."""
        from annotations.demo import airline_tweets

        truth = {t.external_id: t.label for t in airline_tweets()}
        keys = {name: str(i) for i, name in enumerate(project.class_names(), start=1)}
        page = self.page("annotator1", f"/projects/{project.pk}/annotate/")
        for _ in range(3):
            self._label_current(page, lambda ext_id: keys[truth[ext_id]])
        page.keyboard.press(keys[truth[self._current(page)]])
        page.locator("#save-status", has_text="Saved.").wait_for()
        self.save(page, "annotate.png")

    def annotate_image(self, project) -> None:
        from annotations.demo import digits_ground_truth

        truth = digits_ground_truth()
        page = self.page("annotator1", f"/projects/{project.pk}/annotate/")
        for _ in range(3):
            self._label_current(page, lambda ext_id: str(truth[ext_id]))
        page.wait_for_function(f"() => document.querySelector('{CURRENT} img')?.naturalWidth > 0")
        page.keyboard.press(str(truth[self._current(page)]))
        page.locator("#save-status", has_text="Saved.").wait_for()
        self.save(page, "annotate-image.png")

    def annotate_model(self, project) -> None:
        """The model panel with a trained version and the model's guess highlighted."""
        from annotations.demo import airline_tweets

        truth = {t.external_id: t.label for t in airline_tweets()}
        keys = {name: str(i) for i, name in enumerate(project.class_names(), start=1)}
        page = self.page("annotator2", f"/projects/{project.pk}/annotate/")
        suggestion = page.locator(f"{CURRENT} .suggest")
        for _ in range(30):  # the first cards may have been served before the model was warm
            if suggestion.is_visible():
                break
            self._label_current(page, lambda ext_id: keys[truth[ext_id]])
        suggestion.wait_for()
        page.locator("#model [data-model-version]").filter(has_text="none yet").wait_for(
            state="detached"
        )
        self.save(page, "annotate-model.png")

    def review(self, project) -> None:
        page = self.page("reviewer", f"/projects/{project.pk}/review/")
        page.locator("#review-main li.candidate").first.wait_for()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("/")
        page.keyboard.type("The airline's reply settles it.")
        page.keyboard.press("Escape")
        self.save(page, "review.png")

    def quality(self, project) -> None:
        page = self.page("admin", f"/projects/{project.pk}/quality/")
        page.locator("section.quality-maps table.heat").first.wait_for()
        self.save(page, "quality.png", full_page=True)

    def versions(self, project) -> None:
        """A second version saved on the page, written by the worker, beside the first."""
        page = self.page("reviewer", f"/projects/{project.pk}/versions/")
        page.fill("#version-name", "after-review")
        page.fill("#version-note", "After the reviewer's first decisions.")
        page.locator("#version-create button[type=submit]").click()
        page.locator('#versions-table tr[data-version="after-review"] td.num').first.wait_for()
        page.locator("#versions-table .tag", has_text="measuring").first.wait_for(
            state="detached", timeout=60_000
        )
        self.save(page, "versions.png")

    def dashboard(self, project) -> None:
        """The reviewer's project page once the worker has counted and drawn it."""
        page = self.page("reviewer", f"/projects/{project.pk}/")
        deadline = time.monotonic() + 90
        while not page.locator("#dash-as-of").is_visible():  # the worker refreshes it
            if time.monotonic() > deadline:
                raise SystemExit("the dashboard was not drawn within 90 s")
            page.wait_for_timeout(2000)
            page.reload()
        page.wait_for_function(
            "() => [...document.querySelectorAll('main img')].every(i => i.naturalWidth > 0)"
        )
        self.save(page, "dashboard.png", full_page=True)

    def _current(self, page) -> str:
        return page.locator(f"{CURRENT} .ext-id").inner_text()

    def _label_current(self, page, key_for: Callable[[str], str]) -> None:
        ext_id = self._current(page)
        page.keyboard.press(key_for(ext_id))
        page.keyboard.press("Enter")
        exactly = re.compile(f"^{re.escape(ext_id)}$")
        page.locator(f"{CURRENT} .ext-id").filter(has_text=exactly).wait_for(state="detached")


if __name__ == "__main__":
    sys.exit(main())

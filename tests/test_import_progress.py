"""`manage.py import_items` shows real progress: the file's size from the start, the bytes read
as the import goes (a JSON array too, which used to be read whole), images one by one."""

from __future__ import annotations

import functools
import io
import json
import re

import pytest
from django.core.management import call_command
from tqdm import tqdm

from annotations.models import Item

pytestmark = pytest.mark.usefixtures("media_root", "fast_passwords")


def bar_frames(output: str) -> list[str]:
    return [frame for frame in output.split("\r") if frame.strip()]


def percents(frames: list[str]) -> list[int]:
    return [int(m.group(1)) for f in frames if (m := re.search(r"(\d+)%\|", f))]


@pytest.fixture
def every_update(monkeypatch):
    """tqdm draws at most every 0.1 s (and skips small steps) by default; draw every update,
    so that the test sees them."""
    from annotations.management.commands import import_items

    monkeypatch.setattr(import_items, "tqdm", functools.partial(tqdm, mininterval=0, miniters=1))


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_the_progress_bar_counts_the_bytes_of_a_text_file_as_it_is_read(
    project, tmp_path, every_update, suffix
):
    path = tmp_path / f"reviews.{suffix}"
    records = [{"id": f"r{i}", "text": f"review {i} " + "words " * 40} for i in range(12_000)]
    if suffix == "json":
        path.write_text(json.dumps(records))
    elif suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in records))
    size = path.stat().st_size
    assert size > 2 * 1024 * 1024  # several read chunks
    err = io.StringIO()
    call_command("import_items", "Sentiment", str(path), stdout=io.StringIO(), stderr=err)
    assert Item.objects.filter(project=project).count() == 20 + 12_000

    frames = bar_frames(err.getvalue())
    total = f"{size / 1024 / 1024:.2f}M"
    assert f"0%|          | 0.00/{total}" in frames[0]  # the total is known from the start
    done = percents(frames)
    assert any(0 < p < 100 for p in done), frames  # it moves while the file is read
    assert done == sorted(done) and done[-1] == 100
    assert f"{total}/{total}" in frames[-1]


def test_the_progress_bar_counts_images_one_by_one(image_project, tmp_path, every_update):
    from tests.test_imports import image_bytes

    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.png").write_bytes(image_bytes(size=(8 + i, 8)))
    err = io.StringIO()
    call_command("import_items", "Digits", str(folder), stdout=io.StringIO(), stderr=err)
    counts = [m.group(1) for m in re.finditer(r"\| (\d)/7 \[", err.getvalue())]
    assert counts == [str(i) for i in range(8)]

"""The duplicate and outlier commands on real projects: `find_outliers` writes the strangest
items first (to a file or stdout) with a progress bar and refuses an unknown project cleanly;
`find_duplicates` on scikit-learn's handwritten digits groups slightly altered copies with
their originals and leaves different scans of the same digit apart."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image
from sklearn.datasets import load_digits

from annotations.demo import render_digit
from annotations.imports import import_file
from annotations.services import project_create
from curation.dataset_models import AnalysisRun, ItemOutlier
from tests.conftest import add_text_items
from tests.test_duplicates import sentence
from tests.test_imports import zip_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("data_dir")]


# --- find_outliers ----------------------------------------------------------------------------


@pytest.fixture
def odd_project():
    """80 airline sentences, one near twin of t5 (t80), and one German physics sentence (t81)."""
    rng = random.Random(8)
    project = project_create(name="Odd one", classes=["a", "b"])
    texts = [sentence(rng, 14) for _ in range(80)]
    texts.append(texts[5].replace(texts[5].split()[2], "miles", 1))
    texts.append("Quantenchromodynamik beschreibt die starke Wechselwirkung zwischen Quarks")
    add_text_items(project, texts)
    return project


def test_find_outliers_writes_the_strangest_items_first_with_their_neighbours(
    odd_project, tmp_path, capsys
):
    out = tmp_path / "outliers.jsonl"
    call_command("find_outliers", "Odd one", "--output", str(out), "--top", "5")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 5
    assert lines[0]["external_id"] == "t81"
    assert [line["score"] for line in lines] == sorted(
        (line["score"] for line in lines), reverse=True
    )
    assert all(len(line["neighbours"]) == 10 for line in lines)
    stored = ItemOutlier.objects.get(item__external_id="t81")
    assert lines[0]["score"] == stored.score
    run = AnalysisRun.objects.get(project=odd_project, kind=AnalysisRun.Kind.OUTLIERS)
    assert run.status == AnalysisRun.Status.DONE
    captured = capsys.readouterr()
    assert captured.out == ""  # the items went to the file
    assert "Outliers" in captured.err and "%" in captured.err  # the progress bar


def test_find_outliers_writes_to_stdout_without_output_and_names_the_neighbours(
    odd_project, capsys
):
    call_command("find_outliers", str(odd_project.pk), "--top", "82", "--no-progress")
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 82 and captured.err == ""
    twin = next(line for line in lines if line["external_id"] == "t80")
    assert twin["neighbours"][0] == "t5"


def test_find_outliers_refuses_an_unknown_project_and_changes_nothing(odd_project, tmp_path):
    out = tmp_path / "outliers.jsonl"
    with pytest.raises(CommandError, match="No project with id or name 'Nope'"):
        call_command("find_outliers", "Nope", "--output", str(out), "--no-progress")
    with pytest.raises(CommandError, match="No project with id or name '999999'"):
        call_command("find_outliers", "999999", "--no-progress")
    assert not out.exists()
    assert not AnalysisRun.objects.exists() and not ItemOutlier.objects.exists()


def test_manage_py_reports_an_unknown_project_as_an_error_not_a_traceback(db, capsys):
    from curation.management.commands.find_outliers import Command

    # What `manage.py find_outliers Nope` runs once it has found the command.
    with pytest.raises(SystemExit) as ended:
        Command().run_from_argv(["manage.py", "find_outliers", "Nope", "--no-progress"])
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "CommandError: No project with id or name 'Nope'."
    assert not AnalysisRun.objects.exists()


# --- find_duplicates on digit images -----------------------------------------------------------

DIGITS = 400


def _reencoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def altered(png: bytes, how: int) -> bytes:
    """`png` slightly changed: two pixels inverted, one pixel inked, or resized by a pixel; each
    then encoded again (PNG or JPEG)."""
    with Image.open(io.BytesIO(png)) as source:
        image = source.convert("L")
    pixels = np.array(image)
    if how == 0:
        pixels[10, 10] = 255 - pixels[10, 10]
        pixels[40, 33] = 255 - pixels[40, 33]
        return _reencoded(Image.fromarray(pixels), "PNG")
    if how == 1:
        pixels[5, 60] = 0
        return _reencoded(Image.fromarray(pixels), "JPEG")
    side = image.width + (1 if how == 2 else -1)
    resized = image.resize((side, side), Image.Resampling.BILINEAR)
    return _reencoded(resized, "PNG" if how == 2 else "JPEG")


@pytest.fixture
def digit_images(media_root):
    """An image project of the first DIGITS handwritten digits (imported as a zip, as a user
    would) and twelve altered copies of twelve of them; returns it and {copy: original}."""
    project = project_create(
        name="Digit scans", item_kind="image", classes=[str(d) for d in range(10)]
    )
    digits = load_digits()
    entries = {f"digit-{i:04d}.png": render_digit(digits.images[i]) for i in range(DIGITS)}
    originals = list(entries)
    copies = {}
    for n, index in enumerate(range(7, DIGITS, 33)):
        name = f"copy-{n:02d}." + ("jpg" if n % 4 in (1, 3) else "png")
        entries[name] = altered(entries[originals[index]], n % 4)
        copies[name] = originals[index]
    result = import_file(
        project=project, fileobj=io.BytesIO(zip_bytes(entries)), filename="digits.zip"
    )
    assert result.created == len(entries) and not result.duplicates
    return project, copies


def test_altered_copies_of_digits_are_near_duplicates_of_their_originals_and_nothing_else(
    digit_images, tmp_path
):
    project, copies = digit_images
    out = tmp_path / "groups.jsonl"
    call_command("find_duplicates", "Digit scans", "--output", str(out), "--no-progress")
    groups = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    found = sorted(sorted(group["external_ids"]) for group in groups)
    # Each copy with its original, and no group of two different scans: different people's
    # 1s or 6s at 8×8 are alike, but they are not copies of each other.
    assert found == sorted(sorted([copy, original]) for copy, original in copies.items())
    assert {group["kind"] for group in groups} == {"near"}
    assert not any(group["conflicting"] for group in groups)

"""Hostile and oversized uploads: a big JSON array is parsed incrementally in bounded memory,
nesting that would make the parser quadratic is refused first, uploads over the web limit are
refused before parsing with a pointer to `manage.py import_items`, and decoding image bombs
holds at most one full frame per process at a time."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from annotations.imports import ImportFailed, import_file
from annotations.imports.json_array import NestingGuard, iter_json_array
from annotations.models import Item
from curation.pixel_budget import PixelBudget

pytestmark = pytest.mark.usefixtures("media_root", "fast_passwords")

ROOT = Path(__file__).resolve().parent.parent


def write_json_array(path: Path, count: int, *, broken_at: int | None = None) -> int:
    """A pretty-printed JSON array of `count` review records, written a record at a time
    (never whole in memory); record `broken_at` has a trailing comma. Returns the line of
    that comma's closing brace."""
    broken_line = 0
    line = 1
    with path.open("w", encoding="utf-8") as out:
        out.write("[\n")
        line += 1
        for i in range(1, count + 1):
            body = f"review {i}: fine [not] {{nested}} " + "words and more words " * 90
            record = {"id": f"r{i}", "text": body, "stars": i % 5}
            text = json.dumps(record, indent=2)
            if i == broken_at:
                text = text[:-2] + ",\n}"
                broken_line = line + text.count("\n")
            out.write(text + (",\n" if i < count else "\n"))
            line += text.count("\n") + 1
        out.write("]\n")
    return broken_line


def import_path(project, path: Path) -> int:
    with path.open("rb") as handle:
        return import_file(project=project, fileobj=handle, filename=path.name).created


# --- JSON arrays ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_big_json_array_is_imported_in_bounded_memory(project, tmp_path):
    path = tmp_path / "big.json"
    write_json_array(path, 10_000)
    size = path.stat().st_size
    assert size > 18_000_000
    tracemalloc.start()
    try:
        created = import_path(project, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert created == 10_000
    assert Item.objects.filter(project=project).count() == 20 + 10_000
    # json.loads of the whole file held the bytes, the text and every record at once: over
    # three times the file. Now: a chunk, a batch of records and the ids seen so far.
    assert peak < size, f"peak {peak:,} bytes for a {size:,}-byte file"


def test_a_syntax_error_deep_in_a_big_file_names_its_line_column_and_record(project, tmp_path):
    path = tmp_path / "broken.json"
    line = write_json_array(path, 1_000, broken_at=900)
    assert path.stat().st_size > 1 << 20  # the error is several read chunks in
    with pytest.raises(ImportFailed) as caught:
        import_path(project, path)
    [message] = caught.value.messages
    assert message.startswith(f"broken.json line {line}, column 1: malformed JSON (")
    assert message.endswith(", in record 900")
    assert Item.objects.filter(project=project).count() == 20


def test_deep_nesting_in_a_json_array_is_refused_before_the_parser_sees_it(project):
    # ijson's cost grows with the square of the depth: 10,000 levels cost it 250 MB.
    data = b'[{"text": "ok"},\n{"text": "deep", "m": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]"
    tracemalloc.start()
    try:
        with pytest.raises(ImportFailed) as caught:
            import_file(project=project, fileobj=io.BytesIO(data), filename="deep.json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.messages == ["deep.json line 2: nested deeper than 64 levels, in record 2"]
    assert peak < 20_000_000


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_the_nesting_count_ignores_brackets_in_strings_across_chunks(chunk):
    text = json.dumps([{"a": '[[{{"\\[', "b": [[1], {"c": "]]}}\\\\"}]}, "\\\\", [[[]]]])
    data = text.encode()
    guard = NestingGuard(limit=99)
    deepest = max(guard.deepest(data[i : i + chunk]) for i in range(0, len(data), chunk))
    assert (deepest, guard.depth, guard.in_string) == (4, 0, False)


def test_a_json_array_split_anywhere_parses_to_the_same_records():
    records = [{"text": f'r{i} é [{i}] \\ "q"', "n": i * 1.5} for i in range(50)]
    data = json.dumps(records, indent=1).encode()
    for chunk in (1, 5, 333, len(data)):
        pieces = (data[i : i + chunk] for i in range(0, len(data), chunk))
        assert list(iter_json_array(pieces, max_depth=64)) == records


# --- The web upload limit ---------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_before_parsing(
    client, project, project_admin, settings
):
    settings.IMPORT_MAX_UPLOAD_BYTES = 10_000
    data = json.dumps([{"text": f"review {i}"} for i in range(1000)]).encode()
    assert len(data) > 10_000
    client.force_login(project_admin)
    response = client.post(
        reverse("project_import", args=[project.pk]),
        {"file": io.BytesIO(data), "format": "json"},
    )
    assert response.status_code == 413
    html = response.content.decode()
    assert "Nothing was imported" in html
    assert "over the limit of 9.8\xa0KB" in html
    assert "manage.py import_items" in html
    assert response.wsgi_request.FILES == {}  # skipped, never stored
    assert Item.objects.filter(project=project).count() == 20


def test_an_upload_under_the_limit_is_imported(client, project, project_admin, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 10_000
    client.force_login(project_admin)
    response = client.post(
        reverse("project_import", args=[project.pk]),
        {"file": io.BytesIO(b'[{"text": "small"}]'), "format": "json"},
    )
    assert response.status_code == 302
    assert Item.objects.filter(project=project).count() == 21


def test_the_upload_limits_agree(settings):
    assert settings.FILE_UPLOAD_HANDLERS[0] == "annotations.imports.uploads.SizeLimitUploadHandler"
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE <= settings.IMPORT_MAX_UPLOAD_BYTES
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= settings.IMPORT_MAX_UPLOAD_BYTES


def test_an_api_body_over_the_memory_limit_is_a_bad_request(client, project, annotator, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client.force_login(annotator)
    response = client.post(
        reverse("api-annotation-list", args=[project.pk]),
        json.dumps({"item": 1, "labels": ["x" * 2000]}),
        content_type="application/json",
    )
    assert response.status_code in (400, 413)


# --- Image bombs ------------------------------------------------------------------------------


def write_flat_png(path: Path, side: int) -> None:
    """A side×side grey RGB PNG, compressed a row at a time (never a whole frame in memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xfa" * (3 * side)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


PEAK_SCRIPT = """
import resource, sys, threading
import django
django.setup()
from annotations.imports.images import check_image
from curation.featurizers import image_features
data = open(sys.argv[1], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def upload():  # what an import does with each image: check it, then compute its features
    check_image(data)
    image_features(data)
threads = [threading.Thread(target=upload) for _ in range(int(sys.argv[2]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def test_two_uploads_of_image_bombs_at_once_hold_one_frame_at_a_time(tmp_path):
    side = 6300  # 39.7 megapixels, just under the import limit, in a 130 KB file
    path = tmp_path / "bomb.png"
    write_flat_png(path, side)
    assert path.stat().st_size < 200_000
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dataprep_site.settings",
        "DEBUG": "1",
        "DATA_DIR": str(tmp_path),
        # Large blocks straight from mmap, so that freed frames leave the peak RSS (glibc
        # would otherwise keep them in per-thread arenas and the peak would measure those).
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    peak = int(result.stdout.strip()) * 1024  # ru_maxrss is in KiB
    frame = side * side * 3
    # Unbounded: each thread decoded the frame for the check, then again plus two full copies
    # for the features (about 870 MB here); now one frame plus decoder buffers.
    assert peak < 1.5 * frame, f"peak {peak / 2**20:.0f} MiB, a frame is {frame / 2**20:.0f} MiB"


def test_the_pixel_budget_makes_a_second_big_decode_wait_for_the_first():
    budget = PixelBudget(40)
    first_in, second_in, release = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with budget.hold(30):
            first_in.set()
            release.wait(5)

    def second() -> None:
        with budget.hold(30):
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_in.wait(5)
    threads[1].start()
    assert not second_in.wait(0.2)  # 30 + 30 > 40: it waits
    release.set()
    assert second_in.wait(5)
    for thread in threads:
        thread.join(5)
    assert budget.in_use == 0


def test_an_image_bigger_than_the_whole_budget_still_decodes_alone():
    budget = PixelBudget(10)
    started = time.monotonic()
    with budget.hold(1_000):
        assert budget.in_use == 10
    assert budget.in_use == 0 and time.monotonic() - started < 1


def test_an_upload_over_the_limit_through_asgi_is_a_clean_413(project, project_admin, settings):
    """Through Django's ASGI handler (the body spooled to a temporary file, as under uvicorn)."""
    settings.IMPORT_MAX_UPLOAD_BYTES = 10_000
    client = AsyncClient()
    client.force_login(project_admin)
    data = b"[" + b",".join(b'{"text": "review"}' for _ in range(1000)) + b"]"
    response = async_to_sync(client.post)(
        reverse("project_import", args=[project.pk]),
        {"file": io.BytesIO(data), "format": "json"},
    )
    assert response.status_code == 413
    assert "manage.py import_items" in response.content.decode()
    assert Item.objects.filter(project=project).count() == 20


def true_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ab\n\té', max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3)
    ),
    max_leaves=12,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    value=json_values,
    chunk=st.integers(min_value=1, max_value=40),
    indent=st.sampled_from([None, 1]),
)
def test_the_nesting_count_matches_the_document_however_it_is_cut(value, chunk, indent):
    data = json.dumps(value, indent=indent, ensure_ascii=False).encode()
    guard = NestingGuard(limit=99)
    deepest = max(guard.deepest(data[i : i + chunk]) for i in range(0, len(data), chunk))
    assert (deepest, guard.depth, guard.in_string) == (true_depth(value), 0, False)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    records=st.lists(json_values, max_size=6),
    chunk=st.integers(min_value=1, max_value=40),
    indent=st.sampled_from([None, 2]),
)
def test_a_json_array_cut_anywhere_reads_as_json_loads_reads_it(records, chunk, indent):
    data = json.dumps(records, indent=indent, ensure_ascii=False).encode()
    pieces = (data[i : i + chunk] for i in range(0, len(data), chunk))
    assert list(iter_json_array(pieces, max_depth=64)) == json.loads(data)


def test_a_number_yajl_cannot_hold_is_refused_saying_what_to_do(project):
    data = b'[{"text": "a", "n": 1},\n{"text": "b", "n": 123456789012345678901234567890}]'
    with pytest.raises(ImportFailed) as caught:
        import_file(project=project, fileobj=io.BytesIO(data), filename="big.json")
    [message] = caught.value.messages
    assert message.startswith("big.json line 2")
    assert "an integer too large for 64 bits; write it as a string" in message

"""Importing text and image items: what goes in, every way a file is refused, and that a
refused file changes nothing (neither the database nor the media folder)."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image

from annotations import imports
from annotations.imports import ImportFailed, import_file, import_image_folder
from annotations.models import Item, Membership, Project
from tests.conftest import add_text_items, make_user

pytestmark = pytest.mark.usefixtures("media_root", "fast_passwords")


# --- Helpers ----------------------------------------------------------------------------------


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 6), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    pairs = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in pairs:
            archive.writestr(name, data)
    return buffer.getvalue()


def run(project: Project, data: bytes | str, filename: str, **options) -> imports.ImportResult:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return import_file(project=project, fileobj=io.BytesIO(data), filename=filename, **options)


def failure(project: Project, data: bytes | str, filename: str, **options) -> list[str]:
    with pytest.raises(ImportFailed) as caught:
        run(project, data, filename, **options)
    return caught.value.messages


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def count(project: Project) -> int:
    project.refresh_from_db()
    assert project.item_count == Item.objects.filter(project=project).count()
    return project.item_count


# --- Text: what gets imported -----------------------------------------------------------------


def test_csv_rows_become_items_with_the_other_columns_as_metadata(project):
    before = count(project)
    result = run(project, 'id,text,stars\nr1,Great phone,5\nr2,"Broke, sadly",1\n', "r.csv")
    assert result.created == 2
    assert count(project) == before + 2
    item = Item.objects.get(project=project, external_id="r2")
    assert item.text == "Broke, sadly"
    assert item.metadata == {"stars": "1"}
    assert item.needs_annotation


def test_csv_without_an_id_column_gets_ids_from_the_file_name_and_line(project):
    run(project, "text,lang\nhello,en\n\nbonjour,fr\n", "greetings.csv")
    ids = set(
        Item.objects.filter(project=project, text__in=["hello", "bonjour"]).values_list(
            "external_id", flat=True
        )
    )
    assert ids == {"greetings.csv:2", "greetings.csv:4"}


def test_the_chosen_text_and_id_columns_are_used(project):
    run(
        project,
        "review_id,body,id\nA-1,Nice,ignored-1\nA-2,Meh,ignored-2\n",
        "r.csv",
        text_field="body",
        id_field="review_id",
    )
    item = Item.objects.get(project=project, external_id="A-1")
    assert item.text == "Nice"
    assert item.metadata == {"id": "ignored-1"}


def test_a_byte_order_mark_and_windows_line_endings_are_accepted(project):
    run(project, b"\xef\xbb\xbfid,text\r\nw1,caf\xc3\xa9\r\n", "excel.csv")
    assert Item.objects.get(project=project, external_id="w1").text == "café"


def test_a_quoted_cell_may_span_lines_and_later_errors_name_the_right_line(project):
    data = 'id,text\nm1,"first line\nsecond line"\nm2,\n'
    assert failure(project, data, "multi.csv") == ["multi.csv line 4: column 'text' is empty"]
    run(project, 'id,text\nm1,"first line\nsecond line"\n', "multi.csv")
    assert Item.objects.get(project=project, external_id="m1").text == "first line\nsecond line"


def test_json_array_of_objects_keeps_the_other_fields_with_their_types(project):
    records = [
        {"id": 7, "text": "seven", "tags": ["a", "b"], "score": 0.5},
        {"id": "x8", "text": "eight", "extra": {"nested": True}},
    ]
    assert run(project, json.dumps(records), "data.json").created == 2
    assert Item.objects.get(project=project, external_id="7").metadata == {
        "tags": ["a", "b"],
        "score": 0.5,
    }
    assert Item.objects.get(project=project, external_id="x8").metadata == {
        "extra": {"nested": True}
    }


def test_json_without_ids_numbers_the_records(project):
    run(project, json.dumps([{"text": "a"}, {"text": "b"}]), "plain.json")
    assert (
        Item.objects.filter(
            project=project, external_id__in=["plain.json:1", "plain.json:2"]
        ).count()
        == 2
    )


def test_jsonl_imports_one_object_per_line_and_skips_blank_lines(project):
    data = '{"id": "j1", "text": "one"}\n\n{"id": "j2", "text": "two", "src": "web"}\n'
    assert run(project, data, "lines.jsonl").created == 2
    assert Item.objects.get(project=project, external_id="j2").metadata == {"src": "web"}


def test_an_explicit_format_overrides_the_file_extension(project):
    assert run(project, "text\nhi\n", "export.txt", fmt="csv").created == 1


def test_every_imported_item_gets_its_own_random_priority(project):
    rows = "".join(f"p{i},text {i}\n" for i in range(300))
    run(project, "id,text\n" + rows, "many.csv")
    priorities = list(
        Item.objects.filter(project=project, external_id__startswith="p").values_list(
            "priority", flat=True
        )
    )
    assert len(priorities) == 300
    assert len(set(priorities)) == 300
    assert all(0 <= p < 1 for p in priorities)


def test_an_import_larger_than_one_batch_goes_in_whole(project):
    rows = "".join(f"b{i},text {i}\n" for i in range(imports.TEXT_BATCH * 2 + 5))
    before = count(project)
    assert run(project, "id,text\n" + rows, "big.csv").created == imports.TEXT_BATCH * 2 + 5
    assert count(project) == before + imports.TEXT_BATCH * 2 + 5


def test_progress_is_reported_in_bytes_up_to_the_file_size(project):
    data = ("id,text\n" + "".join(f"g{i},text {i}\n" for i in range(5000))).encode()
    calls = []
    run(project, data, "g.csv", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == len(data)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


# --- Text: every way a file is refused, and nothing changes -----------------------------------


def assert_unchanged(project: Project, before: int) -> None:
    assert count(project) == before


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(project):
    before = count(project)
    data = "id,text\nl1,fine\nl2,café\n".encode("latin-1")
    messages = failure(project, data, "latin.csv")
    assert messages == [
        "latin.csv line 3, column 7: the file is not UTF-8 text (byte 0xe9); "
        "save it as UTF-8 and import again."
    ]
    assert_unchanged(project, before)


def test_a_json_file_that_is_not_utf8_is_refused_naming_the_line(project):
    data = '[\n{"text": "ok"},\n{"text": "caf\xe9"}\n]'.encode("latin-1")
    [message] = failure(project, data, "latin.json")
    assert message.startswith("latin.json line 3, column 14: the file is not UTF-8 text")


def test_a_utf16_file_is_refused_with_the_reason(project):
    [message] = failure(project, "id,text\na,b\n".encode("utf-16"), "wide.csv")
    assert "UTF-16" in message and "UTF-8" in message


def test_malformed_json_is_refused_with_line_and_column(project):
    before = count(project)
    data = '[\n  {"text": "a"},\n  {"text": "b",}\n]'
    [message] = failure(project, data, "broken.json")
    assert message.startswith("broken.json line 3, column 16: malformed JSON")
    assert_unchanged(project, before)


def test_each_malformed_jsonl_line_is_reported(project):
    data = '{"text": "ok"}\n{"text": oops}\n{"text": "fine"}\n[1, 2]\n{"text": NaN}\n'
    messages = failure(project, data, "bad.jsonl")
    assert messages[0].startswith("bad.jsonl line 2, column 10: malformed JSON")
    assert messages[1] == "bad.jsonl line 4: expected a JSON object, got an array"
    assert messages[2].startswith("bad.jsonl line 5") and "NaN" in messages[2]
    assert len(messages) == 3


def test_a_json_document_that_is_not_an_array_is_refused(project):
    [message] = failure(project, '{"text": "one"}', "one.json")
    assert "expected a JSON array of objects, got an object" in message


def test_json_records_that_are_not_objects_are_refused_by_index(project):
    messages = failure(project, '[{"text": "a"}, "b", {"text": "c"}, 4]', "mixed.json")
    assert messages == [
        "mixed.json record 2: expected a JSON object, got a string",
        "mixed.json record 4: expected a JSON object, got a number",
    ]


def test_a_missing_text_column_is_refused_listing_the_columns_found(project):
    [message] = failure(project, "id,body,stars\n1,nice,5\n", "r.csv")
    assert message.startswith("r.csv: no column 'text'; the columns are: 'id', 'body', 'stars'.")


def test_a_missing_id_column_is_refused_listing_the_columns_found(project):
    [message] = failure(project, "text\nnice\n", "r.csv", id_field="review_id")
    assert "no column 'review_id'; the columns are: 'text'" in message


def test_a_missing_text_field_in_json_is_refused_listing_the_fields(project):
    [message] = failure(project, '[{"id": 1, "body": "x"}]', "r.json")
    assert message.startswith("r.json record 1: no field 'text'; its fields are: 'id', 'body'.")


def test_a_later_json_record_without_the_text_field_is_refused_by_index(project):
    messages = failure(project, '[{"text": "a"}, {"txt": "b"}]', "r.json")
    assert messages == ["r.json record 2: no field 'text'; its fields are: 'txt'"]


def test_an_empty_text_cell_is_refused_naming_line_and_column(project):
    before = count(project)
    data = "id,text\nr1,fine\nr2,   \nr3,also fine\n"
    assert failure(project, data, "reviews.csv") == ["reviews.csv line 3: column 'text' is empty"]
    assert_unchanged(project, before)


def test_text_that_is_not_a_string_is_refused(project):
    messages = failure(project, '{"text": 5}\n{"text": null}\n', "r.jsonl")
    assert messages == [
        "r.jsonl line 1: field 'text' must be a string, not a number",
        "r.jsonl line 2: field 'text' must be a string, not null",
    ]


def test_an_empty_or_missing_id_is_refused(project):
    messages = failure(project, '{"id": "", "text": "a"}\n{"id": true, "text": "b"}\n', "r.jsonl")
    assert messages == [
        "r.jsonl line 1: id field 'id' is empty",
        "r.jsonl line 2: id field 'id' must be a string or an integer",
    ]


def test_an_id_longer_than_the_column_is_refused(project):
    [message] = failure(project, f"id,text\n{'x' * 300},hello\n", "r.csv")
    assert message == "r.csv line 2: the id is longer than 255 characters"


@pytest.mark.parametrize("filename", ["empty.csv", "empty.json", "empty.jsonl"])
def test_an_empty_file_is_refused(project, filename):
    assert failure(project, b"", filename) == [f"{filename}: the file is empty."]


def test_a_csv_with_only_a_header_is_refused(project):
    assert failure(project, "id,text\n", "h.csv") == ["h.csv: the file has a header but no rows."]


def test_an_empty_json_array_is_refused(project):
    assert failure(project, "[]", "none.json") == ["none.json: the array holds no records."]


def test_a_row_with_the_wrong_number_of_cells_is_refused(project):
    messages = failure(project, "id,text,lang\na,hello,en\nb,hi\nc,hey,en,extra\n", "r.csv")
    assert messages == [
        "r.csv line 3: 2 cells, but the header has 3 columns",
        "r.csv line 4: 4 cells, but the header has 3 columns",
    ]


def test_a_header_naming_a_column_twice_is_refused(project):
    [message] = failure(project, "id,text,id\n1,a,2\n", "r.csv")
    assert message == "r.csv line 1: column 'id' appears twice in the header (columns 1 and 3)."


def test_a_file_name_without_a_known_extension_needs_a_format(project):
    [message] = failure(project, "text\nhi\n", "data.txt")
    assert "cannot tell the format from the file name" in message


def test_a_nul_character_or_lone_surrogate_is_refused_not_a_database_error(project):
    messages = failure(
        project, '{"text": "a\\u0000b"}\n{"text": "ok", "m": "\\ud800"}\n', "nul.jsonl"
    )
    assert [m.split(":")[0] for m in messages] == ["nul.jsonl line 1", "nul.jsonl line 2"]
    assert failure(project, "text\na\x00b\n", "nul.csv")[0].startswith("nul.csv line 2")


def test_a_huge_number_is_refused_not_a_database_error(project):
    [message] = failure(project, '{"text": "ok", "n": 1e999}\n', "big.jsonl")
    assert message.startswith("big.jsonl line 1: malformed JSON")


def test_duplicate_ids_within_the_file_are_refused_with_both_line_numbers(project):
    before = count(project)
    data = "id,text\nd1,a\nd2,b\nd1,c\n"
    assert failure(project, data, "dups.csv") == ["dups.csv line 4: id 'd1' is also on line 2"]
    assert failure(project, '[{"id": 1, "text": "a"}, {"id": "1", "text": "b"}]', "d.json") == [
        "d.json record 2: id '1' is also on record 1"
    ]
    assert_unchanged(project, before)


def test_ids_already_in_the_project_are_refused_with_line_numbers(project):
    before = count(project)  # the fixture's items are t0 … t19
    data = "id,text\nnew1,a\nt3,b\nt7,c\n"
    assert failure(project, data, "again.csv") == [
        "again.csv line 3: id 't3' is already in the project",
        "again.csv line 4: id 't7' is already in the project",
    ]
    assert_unchanged(project, before)


def test_the_same_ids_in_another_project_are_fine(project, other_project):
    add_text_items(other_project, ["x"], prefix="shared")
    assert run(project, "id,text\nshared0,hello\n", "s.csv").created == 1


def test_a_bad_last_row_after_several_batches_leaves_the_project_unchanged(project):
    before = count(project)
    rows = "".join(f"ok{i},text {i}\n" for i in range(imports.TEXT_BATCH * 2 + 10))
    data = "id,text\n" + rows + "last,\n"
    line = imports.TEXT_BATCH * 2 + 12
    assert failure(project, data, "late.csv") == [f"late.csv line {line}: column 'text' is empty"]
    assert_unchanged(project, before)
    assert not Item.objects.filter(external_id__startswith="ok").exists()


def test_errors_are_capped_with_a_count_of_the_rest(project):
    data = "id,text\n" + "".join(f"e{i},\n" for i in range(120))
    with pytest.raises(ImportFailed) as caught:
        run(project, data, "empty-cells.csv")
    assert caught.value.total == 120
    assert len(caught.value.errors) == imports.MAX_ERRORS
    assert caught.value.messages[-1] == f"… and {120 - imports.MAX_ERRORS} more errors"


def test_a_text_file_cannot_go_into_an_image_project(image_project):
    [message] = failure(image_project, "text\nhi\n", "t.csv")
    assert message == (
        "t.csv: 'Digits' is an image project; import images from a folder or a .zip archive, "
        "not a text file."
    )


def test_an_image_archive_cannot_go_into_a_text_project(project, media_root):
    before = count(project)
    [message] = failure(project, zip_bytes({"a.png": image_bytes()}), "pics.zip")
    assert message == (
        "pics.zip: 'Sentiment' is a text project; images can only be imported into an image "
        "project."
    )
    assert_unchanged(project, before)
    assert files_under(media_root) == []


# --- Images: what gets imported ---------------------------------------------------------------


def test_a_zip_of_images_becomes_items_keyed_by_their_path(image_project, media_root):
    data = zip_bytes(
        {
            "digits/": b"",
            "digits/zero.png": image_bytes("PNG", (8, 6)),
            "digits/sub/one.jpg": image_bytes("JPEG", (10, 12)),
            "two.gif": image_bytes("GIF"),
            "three.webp": image_bytes("WEBP"),
            "four.bmp": image_bytes("BMP"),
            "__MACOSX/digits/._zero.png": b"resource fork junk",
            "digits/.DS_Store": b"junk",
            ".hidden/secret.png": b"never read",
            "Thumbs.db": b"junk",
        }
    )
    result = run(image_project, data, "digits.zip")
    assert result.created == 5
    assert count(image_project) == 5
    items = {i.external_id: i for i in Item.objects.filter(project=image_project)}
    assert set(items) == {
        "digits/zero.png",
        "digits/sub/one.jpg",
        "two.gif",
        "three.webp",
        "four.bmp",
    }
    jpeg = items["digits/sub/one.jpg"]
    assert (jpeg.image_format, jpeg.image_width, jpeg.image_height) == ("JPEG", 10, 12)
    assert items["digits/zero.png"].image_format == "PNG"
    # Stored under a random name, with the extension of the real format.
    assert "one" not in jpeg.image.name and jpeg.image.name.endswith(".jpg")
    assert (media_root / jpeg.image.name).read_bytes()[:2] == b"\xff\xd8"
    assert len(files_under(media_root)) == 5


def test_an_imported_image_is_served_with_its_real_content_type(client, image_project, media_root):
    run(image_project, zip_bytes({"x.png": image_bytes("JPEG")}), "mislabelled.zip")
    item = Item.objects.get(project=image_project)
    assert item.image_format == "JPEG"
    user = make_user("viewer")
    Membership.objects.create(project=image_project, user=user)
    client.force_login(user)
    response = client.get(reverse("item_image", args=[image_project.pk, item.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_a_folder_of_images_is_imported_recursively_skipping_hidden_files(image_project, tmp_path):
    folder = tmp_path / "scans"
    (folder / "batch1").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / "a.png").write_bytes(image_bytes())
    (folder / "batch1" / "b.jpeg").write_bytes(image_bytes("JPEG"))
    (folder / ".cache" / "c.png").write_bytes(b"junk")
    (folder / ".DS_Store").write_bytes(b"junk")
    result = import_image_folder(project=image_project, path=folder)
    assert result.created == 2
    assert set(
        Item.objects.values_list("external_id", flat=True).filter(project=image_project)
    ) == {
        "a.png",
        "batch1/b.jpeg",
    }


# --- Images: refused, and nothing is left behind ----------------------------------------------


def assert_nothing_imported(project: Project, media_root: Path) -> None:
    assert count(project) == 0
    assert files_under(media_root) == []


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
HTML = b"<!doctype html><script>alert(document.cookie)</script>"


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("fake.png", SVG, "is markup (SVG, HTML or XML), not an image; refused"),
        ("page.jpg", HTML, "is markup (SVG, HTML or XML), not an image; refused"),
        ("logo.svg", SVG, "is markup (SVG, HTML or XML), not an image; refused"),
        ("scan.png", image_bytes("TIFF"), "is a TIFF image, which is not accepted"),
        ("notes.png", b"just some bytes", "is not an image in an accepted format"),
    ],
)
def test_files_that_are_not_accepted_images_are_refused_whatever_their_name(
    image_project, media_root, name, data, expected
):
    archive = zip_bytes({"good.png": image_bytes(), name: data})
    [message] = failure(image_project, archive, "up.zip")
    assert message.startswith(f"up.zip: {name} {expected}")
    assert_nothing_imported(image_project, media_root)


def test_a_truncated_image_is_refused(image_project, media_root):
    full = image_bytes("PNG", (64, 64), (1, 2, 3))
    jpeg = image_bytes("JPEG", (64, 64))
    archive = zip_bytes({"cut.png": full[: len(full) - 30], "cut.jpg": jpeg[: len(jpeg) // 2]})
    messages = failure(image_project, archive, "cut.zip")
    assert [m.split(":")[1].strip() for m in messages] == ["cut.png", "cut.jpg"]
    assert all("damaged or truncated image" in m for m in messages)
    assert_nothing_imported(image_project, media_root)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims the given size, with no pixel data worth the name."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_header_is_refused_before_decoding(image_project, media_root):
    [message] = failure(
        image_project, zip_bytes({"bomb.png": png_claiming(100_000, 100_000)}), "b.zip"
    )
    assert message.startswith("b.zip: bomb.png: ")
    assert "pixels" in message
    assert_nothing_imported(image_project, media_root)


def test_an_image_over_the_pixel_limit_is_refused(image_project, media_root, settings):
    settings.IMPORT_MAX_IMAGE_PIXELS = 100
    [message] = failure(
        image_project, zip_bytes({"big.png": image_bytes("PNG", (20, 20))}), "p.zip"
    )
    assert message == "p.zip: big.png: 20×20 pixels is over the limit of 100 pixels"
    assert_nothing_imported(image_project, media_root)


def test_an_image_over_the_size_limit_is_refused(image_project, media_root, settings):
    data = image_bytes("PNG", (50, 50))
    settings.IMPORT_MAX_IMAGE_BYTES = len(data) - 1
    [message] = failure(image_project, zip_bytes({"heavy.png": data}), "s.zip")
    assert (
        message == f"s.zip: heavy.png: {len(data):,} bytes is over the limit of {len(data) - 1:,}"
    )
    assert_nothing_imported(image_project, media_root)


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("../evil.png", "contains '..'; refused"),
        ("ok/../../evil.png", "contains '..'; refused"),
        ("/etc/evil.png", "has an absolute path; refused"),
        ("C:/evil.png", "has an absolute path; refused"),
        ("..\\evil.png", "contains '..'; refused"),
        (symlink_entry("link.png"), "is a symbolic link; refused"),
    ],
)
def test_zip_entries_escaping_the_archive_refuse_the_whole_archive(
    image_project, media_root, entry, problem
):
    name = entry.filename if isinstance(entry, zipfile.ZipInfo) else entry
    archive = zip_bytes([("good.png", image_bytes()), (entry, image_bytes())])
    assert failure(image_project, archive, "slip.zip") == [f"slip.zip: entry {name!r} {problem}"]
    assert_nothing_imported(image_project, media_root)


def test_an_archive_unpacking_to_too_many_bytes_is_refused(image_project, media_root, settings):
    settings.IMPORT_MAX_ARCHIVE_BYTES = 1000
    archive = zip_bytes({f"{i}.png": image_bytes("PNG", (30, 30), (i, i, i)) for i in range(20)})
    [message] = failure(image_project, archive, "many.zip")
    assert "more than the limit of 1,000 bytes" in message
    assert_nothing_imported(image_project, media_root)


def test_an_archive_with_too_many_entries_is_refused(image_project, media_root, settings):
    settings.IMPORT_MAX_ARCHIVE_ENTRIES = 2
    archive = zip_bytes({f"{i}.png": image_bytes() for i in range(3)})
    assert failure(image_project, archive, "n.zip") == [
        "n.zip: 3 files is more than the limit of 2"
    ]
    assert_nothing_imported(image_project, media_root)


def test_a_file_that_is_not_a_zip_is_refused(image_project):
    assert failure(image_project, b"PK but not really", "fake.zip") == [
        "fake.zip: not a valid zip archive."
    ]


def test_an_archive_without_images_is_refused(image_project):
    archive = zip_bytes({"__MACOSX/._a.png": b"x", "dir/": b""})
    assert failure(image_project, archive, "empty.zip") == ["empty.zip: no image files found."]


def test_a_bad_last_image_removes_the_files_already_written(image_project, media_root, settings):
    entries = [(f"{i:03}.png", image_bytes("PNG", (5, 5), (i, 0, 0))) for i in range(250)]
    entries.append(("999-last.png", b"<html>not an image</html>"))
    [message] = failure(image_project, zip_bytes(entries), "late.zip")
    assert message.startswith("late.zip: 999-last.png is markup")
    assert_nothing_imported(image_project, media_root)


def test_a_path_appearing_twice_in_an_archive_is_refused(image_project, media_root):
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = zip_bytes([("a.png", image_bytes()), ("a.png", image_bytes("JPEG"))])
    assert failure(image_project, archive, "twice.zip") == [
        "twice.zip: a.png appears twice in the archive"
    ]
    assert_nothing_imported(image_project, media_root)


def test_image_paths_already_in_the_project_are_refused(image_project, media_root):
    run(image_project, zip_bytes({"a.png": image_bytes()}), "first.zip")
    before = files_under(media_root)
    archive = zip_bytes({"b.png": image_bytes(), "a.png": image_bytes()})
    assert failure(image_project, archive, "second.zip") == [
        "second.zip: a.png is already in the project"
    ]
    assert count(image_project) == 1
    assert files_under(media_root) == before


def test_a_symlink_in_a_folder_is_refused(image_project, media_root, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes())
    (folder / "link.png").symlink_to(folder / "a.png")
    with pytest.raises(ImportFailed) as caught:
        import_image_folder(project=image_project, path=folder)
    assert caught.value.messages == ["imgs: link.png is a symbolic link; refused"]
    assert_nothing_imported(image_project, media_root)


# --- The upload page --------------------------------------------------------------------------


def upload(name: str, data: bytes | str) -> io.BytesIO:
    handle = io.BytesIO(data.encode() if isinstance(data, str) else data)
    handle.name = name
    return handle


def test_a_project_admin_gets_the_upload_form(client, project, project_admin):
    client.force_login(project_admin)
    response = client.get(reverse("project_import", args=[project.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'name="text_field"' in html


def test_the_upload_form_of_an_image_project_asks_only_for_the_archive(client, image_project):
    admin = make_user("imgadmin")
    Membership.objects.create(project=image_project, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    html = client.get(reverse("project_import", args=[image_project.pk])).content.decode()
    assert 'name="file"' in html and 'name="text_field"' not in html


@pytest.mark.parametrize("who", ["annotator", "reviewer"])
def test_members_below_project_admin_may_not_import(client, project, who, request):
    client.force_login(request.getfixturevalue(who))
    url = reverse("project_import", args=[project.pk])
    assert client.get(url).status_code == 403
    before = count(project)
    response = client.post(url, {"file": upload("x.csv", "text\nsneaky\n"), "format": ""})
    assert response.status_code == 403
    assert count(project) == before


def test_an_outsider_gets_not_found(client, project, outsider):
    client.force_login(outsider)
    assert client.get(reverse("project_import", args=[project.pk])).status_code == 404


def test_an_anonymous_visitor_is_sent_to_log_in(client, project):
    url = reverse("project_import", args=[project.pk])
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_an_upload_imports_and_redirects_with_a_count(client, project, project_admin):
    client.force_login(project_admin)
    before = count(project)
    rows = "id,text\n" + "".join(f"u{i},text {i}\n" for i in range(1234))
    response = client.post(
        reverse("project_import", args=[project.pk]),
        {"file": upload("reviews.csv", rows), "format": "", "text_field": "text"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("project_detail", args=[project.pk])
    assert "Imported 1,234 items from reviews.csv." in response.content.decode()
    assert count(project) == before + 1234


def test_an_upload_too_big_for_memory_is_streamed_to_a_temporary_file(
    client, project, project_admin, settings
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    client.force_login(project_admin)
    rows = "id,text\n" + "".join(f"big{i},a longer review text number {i}\n" for i in range(500))
    assert len(rows) > 10 * 1024
    response = client.post(
        reverse("project_import", args=[project.pk]), {"file": upload("big.csv", rows)}
    )
    assert response.status_code == 302
    assert Item.objects.filter(project=project, external_id__startswith="big").count() == 500


def test_a_bad_upload_shows_the_located_errors_as_text_and_imports_nothing(
    client, project, project_admin
):
    client.force_login(project_admin)
    before = count(project)
    data = "id,<script>alert(1)</script>\nz1,x\n"
    response = client.post(
        reverse("project_import", args=[project.pk]),
        {"file": upload("evil.csv", data), "format": "csv", "text_field": "text"},
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "Nothing was imported" in html
    assert "evil.csv: no column &#x27;text&#x27;" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    assert count(project) == before


def test_an_upload_lists_each_bad_line(client, project, project_admin):
    client.force_login(project_admin)
    response = client.post(
        reverse("project_import", args=[project.pk]),
        {"file": upload("r.jsonl", '{"text": ""}\n{"text": "ok"}\n{"text": 3}\n'), "format": ""},
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "r.jsonl line 1: field &#x27;text&#x27; is empty" in html
    assert "r.jsonl line 3: field &#x27;text&#x27; must be a string, not a number" in html


def test_an_upload_without_a_file_is_a_bad_request(client, project, project_admin):
    client.force_login(project_admin)
    response = client.post(reverse("project_import", args=[project.pk]), {"format": "csv"})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()


def test_a_zip_upload_imports_images(client, image_project, media_root):
    admin = make_user("imgadmin")
    Membership.objects.create(project=image_project, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    archive = zip_bytes({"a.png": image_bytes(), "b/c.jpg": image_bytes("JPEG")})
    response = client.post(
        reverse("project_import", args=[image_project.pk]),
        {"file": upload("scans.zip", archive), "format": ""},
    )
    assert response.status_code == 302
    assert count(image_project) == 2
    assert len(files_under(media_root)) == 2


def test_the_upload_checks_the_csrf_token(project, project_admin):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(project_admin)
    response = client.post(
        reverse("project_import", args=[project.pk]), {"file": upload("a.csv", "text\nx\n")}
    )
    assert response.status_code == 403


def test_the_project_page_links_import_for_admins_only(client, project, project_admin, annotator):
    url = reverse("project_import", args=[project.pk])
    client.force_login(project_admin)
    assert url in client.get(reverse("project_detail", args=[project.pk])).content.decode()
    client.force_login(annotator)
    assert url not in client.get(reverse("project_detail", args=[project.pk])).content.decode()


# --- The management command -------------------------------------------------------------------


def test_the_command_imports_a_csv_by_project_name(project, tmp_path):
    path = tmp_path / "cmd.csv"
    path.write_text("review,stars\nsolid,4\nflimsy,2\n")
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_items", "Sentiment", str(path), "--text-field", "review", stdout=out, stderr=err
    )
    assert "Imported 2 items into 'Sentiment'." in out.getvalue()
    assert Item.objects.get(project=project, external_id="cmd.csv:3").metadata == {"stars": "2"}


def test_the_command_imports_jsonl_by_project_id_with_an_explicit_format(project, tmp_path):
    path = tmp_path / "cmd.data"
    path.write_text('{"key": "k1", "text": "one"}\n')
    call_command(
        "import_items",
        str(project.pk),
        str(path),
        "--format",
        "jsonl",
        "--id-field",
        "key",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert Item.objects.filter(project=project, external_id="k1").exists()


def test_the_command_imports_a_folder_and_a_zip_of_images(image_project, tmp_path, media_root):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "f.png").write_bytes(image_bytes())
    archive = tmp_path / "more.zip"
    archive.write_bytes(zip_bytes({"z.png": image_bytes()}))
    err = io.StringIO()
    call_command("import_items", "Digits", str(folder), stdout=io.StringIO(), stderr=err)
    call_command("import_items", "Digits", str(archive), stdout=io.StringIO(), stderr=err)
    assert set(
        Item.objects.filter(project=image_project).values_list("external_id", flat=True)
    ) == {
        "f.png",
        "z.png",
    }
    assert "img" in err.getvalue()  # the progress bar


def test_the_command_prints_located_errors_and_fails(project, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,text\na,\nb,ok\nb,again\n")
    before = count(project)
    err = io.StringIO()
    with pytest.raises(CommandError, match="Nothing was imported: 2 problems in bad.csv"):
        call_command("import_items", "Sentiment", str(path), stdout=io.StringIO(), stderr=err)
    assert "bad.csv line 2: column 'text' is empty" in err.getvalue()
    assert "bad.csv line 4: id 'b' is also on line 3" in err.getvalue()
    assert count(project) == before


def test_the_command_refuses_an_unknown_project_or_path(project, tmp_path):
    with pytest.raises(CommandError, match="No project with id or name 'Nope'"):
        call_command("import_items", "Nope", str(tmp_path))
    with pytest.raises(CommandError, match="no such file or folder"):
        call_command("import_items", "Sentiment", str(tmp_path / "missing.csv"))


def test_a_first_import_into_an_empty_project_still_refuses_duplicates_within_the_file(db):
    from annotations.services import project_create

    empty = project_create(name="Fresh", classes=["a"])
    assert failure(empty, "id,text\nx,a\nx,b\n", "f.csv") == [
        "f.csv line 3: id 'x' is also on line 2"
    ]
    assert run(empty, "id,text\nx,a\ny,b\n", "f.csv").created == 2
    assert count(empty) == 2
    assert sorted(Item.objects.filter(project=empty).values_list("text", flat=True)) == ["a", "b"]


def test_a_multi_picture_jpeg_from_a_phone_camera_is_accepted_as_jpeg(image_project):
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (9, 7), "red"), Image.new("RGB", (9, 7), "blue")
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    run(image_project, zip_bytes({"phone.jpg": buffer.getvalue()}), "phone.zip")
    item = Item.objects.get(project=image_project)
    assert (item.image_format, item.image_width, item.image_height) == ("JPEG", 9, 7)


def test_deeply_nested_json_is_refused_not_a_crash(project):
    deep = '{"text": "ok", "m": ' + "[" * 100 + "]" * 100 + "}\n"
    very_deep = '{"text": "ok", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    messages = failure(project, deep + very_deep, "deep.jsonl")
    assert messages == [
        "deep.jsonl line 1: nested deeper than 64 levels",
        "deep.jsonl line 2: the JSON is nested too deeply",
    ]


def test_text_with_backslashes_tabs_and_copy_markers_is_stored_exactly(project):
    tricky = 'back\\slash \\N tab\there "quoted" emoji 🙂 \r\n new line'
    records = [{"id": "tricky", "text": tricky, "meta": "\\N"}]
    run(project, json.dumps(records), "tricky.json")
    item = Item.objects.get(project=project, external_id="tricky")
    assert item.text == tricky
    assert item.metadata == {"meta": "\\N"}


@pytest.mark.postgres
def test_a_big_import_refreshes_the_planner_statistics_after_commit(
    project, django_capture_on_commit_callbacks
):
    from django.db import connection

    def estimated_rows() -> float:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'annotations_item'")
            return cursor.fetchone()[0]

    assert estimated_rows() < imports.ANALYZE_AFTER
    rows = "".join(f"s{i},text {i}\n" for i in range(imports.ANALYZE_AFTER))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run(project, "id,text\n" + rows, "stats.csv")
    assert len(callbacks) == 1
    assert estimated_rows() >= imports.ANALYZE_AFTER

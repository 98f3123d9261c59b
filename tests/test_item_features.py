"""Image features computed once at import and stored: what an import stores, that training reads
the stored vectors instead of the files, and how items without a (current) vector catch up."""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import DatabaseError
from PIL import Image

from annotations import demo
from annotations.imports import ImportFailed, import_file, import_image_folder
from annotations.models import Item, Project
from curation import featurizers
from curation.features import item_features, store_image_features
from curation.featurizers import featurizer_for, serialize
from curation.models import ItemFeatures

pytestmark = pytest.mark.usefixtures("media_root")


def image_bytes(index: int, fmt: str = "PNG") -> bytes:
    """A small image that differs from every other index (colour and a bar's position)."""
    image = Image.new("RGB", (12, 10), (255, 255 - 20 * index, 40 * index % 256))
    for y in range(10):
        image.putpixel((index % 12, y), (0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def zip_of(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def import_zip(project: Project, files: dict[str, bytes]) -> dict[str, Item]:
    import_file(project=project, fileobj=zip_of(files), filename="upload.zip")
    return {item.external_id: item for item in Item.objects.filter(project=project)}


def expected(data: bytes) -> np.ndarray:
    return featurizer_for("image").transform([data])[0]


def stored_vector(item: Item) -> np.ndarray:
    row = ItemFeatures.objects.get(item=item)
    return featurizers.deserialize(row.vector)


def test_importing_images_stores_one_vector_per_item_equal_to_the_featurizer_on_its_bytes(
    image_project,
):
    files = {"a.png": image_bytes(1), "b/c.jpg": image_bytes(2, "JPEG"), "d.gif": image_bytes(3)}
    items = import_zip(image_project, files)

    assert ItemFeatures.objects.filter(item__project=image_project).count() == 3
    featurizer = featurizer_for("image")
    for external_id, data in files.items():
        row = ItemFeatures.objects.get(item=items[external_id])
        assert (row.featurizer_name, row.featurizer_version) == ("image-pixels", 1)
        np.testing.assert_array_equal(featurizers.deserialize(row.vector), expected(data))
        assert featurizers.deserialize(row.vector).shape == (featurizer.n_features,)


def test_a_folder_import_stores_features_too(image_project, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(4))
    import_image_folder(project=image_project, path=folder)
    item = Item.objects.get(project=image_project)
    np.testing.assert_array_equal(stored_vector(item), expected(image_bytes(4)))


def test_training_reads_stored_vectors_in_one_query_without_opening_files(
    image_project, media_root, django_assert_num_queries
):
    files = {f"{i}.png": image_bytes(i) for i in range(5)}
    items = import_zip(image_project, files)
    for path in media_root.rglob("*"):
        if path.is_file():
            path.unlink()  # any attempt to decode a file now fails
    order = ["3.png", "0.png", "4.png", "1.png", "2.png"]

    with django_assert_num_queries(1):
        X, kept = item_features(
            image_project, featurizer_for("image"), [items[e].pk for e in order]
        )

    assert kept == [items[e].pk for e in order]
    np.testing.assert_array_equal(X, np.vstack([expected(files[e]) for e in order]))


def test_an_item_without_a_stored_vector_is_featurized_from_its_file_and_then_stored(
    image_project, media_root
):
    items = import_zip(image_project, {"stored.png": image_bytes(1)})
    old = Item(project=image_project, external_id="old.png", image_format="PNG")
    old.image.save("old.png", ContentFile(image_bytes(2)), save=False)
    old.save()
    assert not ItemFeatures.objects.filter(item=old).exists()
    ids = [old.pk, items["stored.png"].pk, 999_999]  # the last one does not exist

    X, kept = item_features(image_project, featurizer_for("image"), ids)

    assert kept == [old.pk, items["stored.png"].pk]
    np.testing.assert_array_equal(
        X, np.vstack([expected(image_bytes(2)), expected(image_bytes(1))])
    )
    np.testing.assert_array_equal(stored_vector(old), expected(image_bytes(2)))
    old.image.delete(save=False)  # the stored vector is enough from now on
    X, kept = item_features(image_project, featurizer_for("image"), [old.pk])
    np.testing.assert_array_equal(X[0], expected(image_bytes(2)))


def test_a_vector_from_another_featurizer_version_is_recomputed_and_replaced(image_project):
    items = import_zip(image_project, {"a.png": image_bytes(5)})
    item = items["a.png"]
    ItemFeatures.objects.filter(item=item).update(
        featurizer_version=0, vector=serialize(np.zeros(3, dtype=np.float32))
    )

    X, kept = item_features(image_project, featurizer_for("image"), [item.pk])

    assert kept == [item.pk]
    np.testing.assert_array_equal(X[0], expected(image_bytes(5)))
    row = ItemFeatures.objects.get(item=item)
    assert row.featurizer_version == featurizer_for("image").version
    np.testing.assert_array_equal(featurizers.deserialize(row.vector), expected(image_bytes(5)))


def test_a_damaged_stored_vector_is_recomputed_not_trusted(image_project):
    items = import_zip(image_project, {"a.png": image_bytes(6), "b.png": image_bytes(7)})
    blob = bytearray(ItemFeatures.objects.get(item=items["a.png"]).vector)
    blob[-1] ^= 0xFF  # the checksum no longer matches
    ItemFeatures.objects.filter(item=items["a.png"]).update(vector=bytes(blob))

    ids = [items["a.png"].pk, items["b.png"].pk]
    X, kept = item_features(image_project, featurizer_for("image"), ids)

    assert kept == ids
    np.testing.assert_array_equal(
        X, np.vstack([expected(image_bytes(6)), expected(image_bytes(7))])
    )
    np.testing.assert_array_equal(stored_vector(items["a.png"]), expected(image_bytes(6)))


def test_a_failed_import_stores_no_features(image_project, monkeypatch):
    from annotations.imports import images

    stored = []

    def spy(batch, **kwargs):
        stored.append(store_image_features(batch, **kwargs))
        return stored[-1]

    monkeypatch.setattr(images, "IMAGE_BATCH", 2)
    monkeypatch.setattr(images, "store_image_features", spy)
    files = {f"{i}.png": image_bytes(i) for i in range(5)}
    files["z-broken.png"] = b"not an image"

    with pytest.raises(ImportFailed):
        import_file(project=image_project, fileobj=zip_of(files), filename="bad.zip")

    assert sum(stored) == 4  # two batches went in before the broken file was reached...
    assert not Item.objects.filter(project=image_project).exists()
    assert not ItemFeatures.objects.exists()  # ...and left with the rest of the import


def test_an_image_that_cannot_be_featurized_is_imported_and_featurized_later(
    image_project, monkeypatch, caplog
):
    real = featurizers.image_features
    bad = image_bytes(2)

    def flaky(data, **kwargs):
        if data == bad:
            raise RuntimeError("the featurizer tripped")
        return real(data, **kwargs)

    monkeypatch.setattr(featurizers, "image_features", flaky)
    with caplog.at_level(logging.WARNING, logger="curation.features"):
        items = import_zip(image_project, {"ok.png": image_bytes(1), "bad.png": bad})

    assert set(items) == {"ok.png", "bad.png"}
    assert ItemFeatures.objects.filter(item=items["ok.png"]).exists()
    assert not ItemFeatures.objects.filter(item=items["bad.png"]).exists()
    assert "the featurizer tripped" in caplog.text

    monkeypatch.setattr(featurizers, "image_features", real)
    X, kept = item_features(image_project, featurizer_for("image"), [items["bad.png"].pk])
    assert kept == [items["bad.png"].pk]
    np.testing.assert_array_equal(stored_vector(items["bad.png"]), expected(bad))


def test_a_failed_features_insert_does_not_fail_the_import(image_project, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(ItemFeatures.objects, "bulk_create", broken)
    with caplog.at_level(logging.WARNING, logger="curation.features"):
        items = import_zip(image_project, {"a.png": image_bytes(1)})

    assert list(items) == ["a.png"]
    assert not ItemFeatures.objects.exists()
    assert "could not store the features" in caplog.text


def test_the_demo_digits_get_their_features_at_seeding(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.DEBUG = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    demo.seed_demo()

    digits = Project.objects.get(name=demo.DIGITS_PROJECT)
    assert ItemFeatures.objects.filter(item__project=digits).count() == 1797
    first = digits.items.get(external_id=demo.digit_external_id(0))
    pixels = demo._digits().images[0]
    np.testing.assert_array_equal(stored_vector(first), expected(demo.render_digit(pixels)))

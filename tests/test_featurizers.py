"""Featurizers: fixed shapes, determinism, signal, robustness and safe storage (no DB needed)."""

from __future__ import annotations

import struct
import subprocess
import sys
from io import BytesIO

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from curation.featurizers import (
    IMAGE_FEATURES,
    Featurizer,
    ImagePixelFeaturizer,
    TextHashingFeaturizer,
    deserialize,
    deserialize_batch,
    featurizer_for,
    image_features,
    serialize,
)

TEXTS = [
    "The battery life of this phone is excellent and it charges fast.",
    "Great phone: the battery lasts all day and charging is quick!",
    "The recipe needs two cups of flour, sugar and a pinch of salt.",
    "",
    "<script>alert('x')</script><b>bold</b> &amp; entities",
    "Café naïve résumé — 東京 🚀 \u200b zero-width",
]


def _cosine(a, b) -> float:
    a = a.toarray().ravel() if sp.issparse(a) else np.ravel(a)
    b = b.toarray().ravel() if sp.issparse(b) else np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _gradient(size=(40, 24)) -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    arr = np.stack(
        [np.tile(x, (size[1], 1)), np.tile(x[::-1], (size[1], 1)), np.full(size[::-1], 90)],
        axis=-1,
    ).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def _digit_png(pixels: np.ndarray) -> bytes:
    """Render an 8x8 digits sample (0..16, 16 = ink) as dark ink on white, like a scan."""
    gray = (255 - pixels * 255 / 16).clip(0, 255).astype(np.uint8)
    return _encode(Image.fromarray(gray, mode="L"), "PNG")


# ------------------------------------------------------------------------------------------ text


def test_featurizer_for_returns_protocol_featurizers_by_item_kind():
    text, image = featurizer_for("text"), featurizer_for("image")
    assert isinstance(text, TextHashingFeaturizer) and isinstance(text, Featurizer)
    assert isinstance(image, ImagePixelFeaturizer) and isinstance(image, Featurizer)
    with pytest.raises(ValueError, match="no featurizer for item kind 'audio'"):
        featurizer_for("audio")


def test_text_features_are_float32_csr_with_unit_rows_and_configured_width():
    featurizer = TextHashingFeaturizer()
    matrix = featurizer.transform(TEXTS)
    assert sp.isspmatrix_csr(matrix) or isinstance(matrix, sp.csr_array)
    assert matrix.shape == (len(TEXTS), featurizer.n_features)
    assert matrix.dtype == np.float32
    assert featurizer.n_features <= 2**17
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    assert norms[3] == 0.0  # empty text: an all-zero row, not an error
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-5)
    assert (matrix.data >= 0).all()  # alternate_sign=False
    assert TextHashingFeaturizer(n_features=2**10).transform(["hi there"]).shape == (1, 2**10)


def test_text_features_are_identical_across_instances():
    first = TextHashingFeaturizer().transform(TEXTS)
    second = TextHashingFeaturizer().transform(TEXTS)
    assert (first != second).nnz == 0


def test_text_features_are_identical_across_processes():
    code = (
        "import hashlib, sys\n"
        "from curation.featurizers import TextHashingFeaturizer\n"
        "m = TextHashingFeaturizer().transform(sys.argv[1:])\n"
        "m.sort_indices()\n"
        "print(hashlib.sha256(m.indices.tobytes() + m.data.tobytes()).hexdigest())\n"
    )
    texts = [t for t in TEXTS if t]
    digests = {
        subprocess.run(
            [sys.executable, "-c", code, *texts],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_similar_texts_are_closer_than_unrelated_texts():
    matrix = TextHashingFeaturizer().transform(TEXTS[:3])
    assert _cosine(matrix[0], matrix[1]) > _cosine(matrix[0], matrix[2]) + 0.1


def test_text_is_lowercased_and_accent_stripped():
    matrix = TextHashingFeaturizer().transform(["CAFÉ Résumé", "cafe resume"])
    assert (matrix[0] != matrix[1]).nnz == 0


def test_text_transform_rejects_a_bare_string_and_non_text_items():
    featurizer = TextHashingFeaturizer()
    with pytest.raises(TypeError, match="not a single string"):
        featurizer.transform("one text")
    with pytest.raises(TypeError, match="text #1 is NoneType"):
        featurizer.transform(["ok", None])
    assert featurizer.transform([]).shape == (0, featurizer.n_features)


# ---------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_image_features_have_fixed_shape_and_range_for_each_format(fmt):
    vec = image_features(_encode(_gradient(), fmt))
    assert vec.shape == (IMAGE_FEATURES,) and vec.dtype == np.float32
    assert np.isfinite(vec).all() and vec.min() >= 0.0 and vec.max() <= 1.0
    ink, histogram = vec[:256], vec[256:]
    assert ink.max() > 0.1  # the gradient is visible
    assert histogram.sum() == pytest.approx(1.0, abs=1e-5)


def test_transparent_rgba_and_palette_images_are_composited_on_white():
    clear = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    white = Image.new("RGB", (20, 20), (255, 255, 255))
    np.testing.assert_allclose(
        image_features(_encode(clear, "PNG")), image_features(_encode(white, "PNG")), atol=1e-6
    )
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.paste(1, (0, 0, 10, 20))
    vec = image_features(_encode(palette, "GIF", transparency=1))  # white half is transparent
    assert vec[:256].max() == pytest.approx(1.0)  # black half is full ink
    assert 0.3 < float((vec[:256] > 0.5).mean()) < 0.7
    semi = Image.new("LA", (8, 8), (0, 128))
    assert image_features(_encode(semi, "PNG"))[:256].mean() == pytest.approx(0.5, abs=0.02)


def test_image_features_are_identical_across_instances_and_preserve_aspect():
    data = _encode(_gradient((60, 15)), "PNG")
    first = ImagePixelFeaturizer().transform([data, data])
    second = ImagePixelFeaturizer().transform([data])
    assert first.shape == (2, IMAGE_FEATURES) and first.dtype == np.float32
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[0], first[1])
    ink = first[0, :256].reshape(16, 16)
    assert ink[0].max() == 0.0 and ink[-1].max() == 0.0  # wide image padded top and bottom


def test_colour_histogram_distinguishes_colours_the_thumbnail_cannot():
    red = image_features(_encode(Image.new("RGB", (8, 8), (200, 30, 30)), "PNG"))
    blue = image_features(_encode(Image.new("RGB", (8, 8), (30, 30, 200)), "PNG"))
    assert not np.array_equal(red[256:], blue[256:])


def test_undecodable_or_oversized_images_raise_value_error_naming_the_item():
    with pytest.raises(ValueError, match="cannot decode image"):
        image_features(b"definitely not an image")
    with pytest.raises(ValueError, match="over the limit"):
        image_features(_encode(_gradient(), "PNG"), max_pixels=100)
    good = _encode(_gradient(), "PNG")
    with pytest.raises(ValueError, match=r"image #1: cannot decode image"):
        ImagePixelFeaturizer().transform([good, good[:40]])


def test_digit_image_features_carry_enough_signal_for_a_linear_model():
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))[:600]
    features = ImagePixelFeaturizer().transform([_digit_png(digits.images[i]) for i in order])
    assert features.shape == (600, IMAGE_FEATURES)
    labels = digits.target[order]
    model = LogisticRegression(max_iter=2000).fit(features[:300], labels[:300])
    assert model.score(features[300:], labels[300:]) > 0.8


# --------------------------------------------------------------------------------------- storage


def test_serialize_round_trips_exactly_and_never_pickles():
    vec = image_features(_encode(_gradient(), "JPEG"))
    blob = serialize(vec)
    assert b"numpy" not in blob and not blob.startswith(b"\x80")  # not a pickle stream
    restored = deserialize(blob, n_features=IMAGE_FEATURES)
    assert restored.dtype == np.float32 and np.array_equal(restored, vec)
    restored[0] = 5.0  # writable, independent copy
    stacked = deserialize_batch([blob, serialize(vec * 0)], IMAGE_FEATURES)
    assert stacked.shape == (2, IMAGE_FEATURES) and np.array_equal(stacked[0], vec)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:5], "shorter than the 14-byte header"),
        (lambda b: b[:-3], "truncated: header says 320 float32 values"),
        (lambda b: b + b"\x00", "has trailing bytes"),
        (lambda b: b"XXXX" + b[4:], "not a feature blob"),
        (lambda b: b[:4] + struct.pack("<H", 99) + b[6:], "unsupported feature blob format"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "corrupted: checksum mismatch"),
    ],
)
def test_corrupted_or_truncated_blobs_raise_a_clear_value_error(mangle, message):
    blob = serialize(np.linspace(0, 1, IMAGE_FEATURES, dtype=np.float32))
    with pytest.raises(ValueError, match=message):
        deserialize(mangle(blob))


def test_deserialize_checks_the_expected_width_and_batch_names_the_bad_row():
    blob = serialize(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="has 10 values, expected 320"):
        deserialize(blob, n_features=IMAGE_FEATURES)
    with pytest.raises(ValueError, match=r"stored features #1: .*truncated"):
        deserialize_batch([blob, blob[:-4]], 10)
    with pytest.raises(ValueError, match="1-D vector"):
        serialize(np.zeros((2, 2)))

"""The model file format: plain arrays plus a JSON header, never pickle.

A model file must survive restarts, be swapped atomically (a crashed trainer never leaves a
half-written model) and never execute code when read, because files could come from anywhere.
Layout, all in one file:

    b"DPMODEL\\n" | header length (8 bytes, little-endian) | JSON header | .npz payload

The header carries `format_version`, the featurizer's name/version/n_features, class names,
mode, label counts, created time, a metrics dict, and the SHA-256 and length of the payload.
The payload is `numpy.savez_compressed` of numeric arrays only and is read with
`allow_pickle=False`, so an object array is refused rather than unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from curation.learner import IncrementalLearner

__all__ = [
    "FORMAT_VERSION",
    "ModelFileError",
    "delete_project_models",
    "load_learner",
    "read_model_file",
    "save_learner",
]

MAGIC = b"DPMODEL\n"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<Q")
_ARRAYS = ("model_classes", "coef", "intercept", "label_counts")


class ModelFileError(ValueError):
    """A model file is corrupt, truncated, from an unknown format or for another feature space."""


def save_learner(
    learner: IncrementalLearner,
    path: str | os.PathLike,
    *,
    featurizer_name: str,
    featurizer_version: int,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `learner` to `path` atomically and return the header written.

    The file is written to a temporary file in the same directory, fsynced, then `os.replace`d
    over `path`, so readers see either the old model or the new one, never a partial file.
    """
    model_classes, coef, intercept = learner.state()
    payload = _npz(
        model_classes=np.asarray(model_classes, dtype=np.int64),
        coef=np.asarray(coef, dtype=np.float64),
        intercept=np.asarray(intercept, dtype=np.float64),
        label_counts=np.asarray(learner.label_counts, dtype=np.int64),
    )
    header = {
        "format_version": FORMAT_VERSION,
        "featurizer": {
            "name": featurizer_name,
            "version": int(featurizer_version),
            "n_features": learner.n_features,
        },
        "classes": learner.classes,
        "multi_label": learner.multi_label,
        "params": {"C": learner.params["C"], "max_iter": learner.params["max_iter"]},
        "n_labels": int(learner.n_labels),
        "label_counts": [int(c) for c in learner.label_counts],
        "created": datetime.now(UTC).isoformat(),
        "metrics": metrics or {},
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
    }
    head = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + _LENGTH.pack(len(head)) + head + payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return header


def _npz(**arrays: np.ndarray) -> bytes:
    """What `np.savez_compressed` writes (read back by `np.load`), at zlib level 1: the trainer
    saves a model after every label, and level 6 spent ~27 ms of CPU on a text model's 3 MB of
    coefficients against ~14 ms at level 1, for a file ~10% larger."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
    return buffer.getvalue()


def _read(path: Path) -> tuple[dict[str, Any], bytes]:
    """Split a model file into (header, verified payload); every defect is a ModelFileError."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file: {exc}") from exc
    start = len(MAGIC) + _LENGTH.size
    if len(blob) < start or not blob.startswith(MAGIC):
        raise ModelFileError(f"{path}: not a model file (bad magic or truncated header)")
    (head_len,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if len(blob) < start + head_len:
        raise ModelFileError(f"{path}: truncated: header says {head_len} bytes of JSON")
    try:
        header = json.loads(blob[start : start + head_len])
    except ValueError as exc:
        raise ModelFileError(f"{path}: header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: header is not a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: unknown model format version {version!r} (this code reads {FORMAT_VERSION})"
        )
    payload = blob[start + head_len :]
    if len(payload) != header.get("payload_bytes"):
        raise ModelFileError(
            f"{path}: truncated or padded: payload is {len(payload)} bytes, header says "
            f"{header.get('payload_bytes')}"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ModelFileError(f"{path}: checksum mismatch: the model file is corrupted")
    return header, payload


def read_model_file(
    path: str | os.PathLike,
    *,
    featurizer_name: str | None = None,
    featurizer_version: int | None = None,
    n_features: int | None = None,
) -> tuple[IncrementalLearner, dict[str, Any]]:
    """Load a learner and its header, checking the feature space when expectations are given."""
    path = Path(path)
    header, payload = _read(path)
    featurizer = header.get("featurizer") or {}
    expected = {"name": featurizer_name, "version": featurizer_version, "n_features": n_features}
    for key, want in expected.items():
        if want is not None and featurizer.get(key) != want:
            raise ModelFileError(
                f"{path}: model was trained for featurizer {key} {featurizer.get(key)!r}, "
                f"expected {want!r}; retrain for this feature space"
            )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAYS}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: bad array payload: {exc}") from exc
    for name, arr in arrays.items():
        if arr.dtype.kind not in "iuf":
            raise ModelFileError(f"{path}: array {name!r} has non-numeric dtype {arr.dtype}")
    try:
        learner = IncrementalLearner(
            header["classes"],
            multi_label=bool(header["multi_label"]),
            n_features=featurizer.get("n_features"),
            **header["params"],
        )
        learner.set_state(arrays["model_classes"], arrays["coef"], arrays["intercept"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{path}: inconsistent model file: {exc}") from exc
    learner.label_counts = arrays["label_counts"].astype(np.int64)
    learner.n_labels = int(header.get("n_labels", 0))
    learner._rows_missing = learner.n_labels > 0
    return learner, header


def load_learner(path: str | os.PathLike, **expected: Any) -> IncrementalLearner:
    """The learner stored at `path`; see `read_model_file` for the feature-space checks.

    It predicts exactly like the saved one. The file holds no training rows, so to keep training
    call `fit()` with all labels so far (it warm-starts from the loaded coefficients).
    """
    return read_model_file(path, **expected)[0]


def delete_project_models(folder: str | os.PathLike) -> None:
    """Remove a deleted project's model folder (`models_dir() / "project-<id>"`) with its files;
    nothing to do when it has none."""
    shutil.rmtree(folder, ignore_errors=True)

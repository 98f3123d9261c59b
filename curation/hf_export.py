"""A dataset version as a Hugging Face dataset folder: `data/<split>-00000-of-00001.parquet`
for each split with labelled items, and a `README.md` dataset card whose YAML front matter
follows the Hub's format, so `datasets.load_dataset(folder)` (or the Hub, once pushed) reads
the label as a `ClassLabel` with the project's class names.

Only labelled items are written: a training set has no use for an item without a final label.
The label ids are positions in the version's class schema, retired classes included, so an id
names the same class in every version of a project. The class names are in the Parquet files
too (the arrow schema's "huggingface" metadata, as `datasets` writes it), so a split file read
on its own still knows them.

Rows stream through, a batch at a time per split (one `ParquetWriter` each): a version of a
million items needs memory for three batches, not for the version. The writer options are
fixed and nothing depends on the clock, so the same version gives the same bytes every time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from curation.version_rows import (
    NOTHING_LABELLED,
    SPLITS,
    ExportError,
    class_ids,
    image_bytes,
    is_image,
    is_multi_label,
    labelled_ids,
    row_split,
)

__all__ = ["BATCH_ROWS", "SplitSummary", "arrow_schema", "dataset_card", "hf_export", "hf_features"]

#: Rows per record batch and per row group.
BATCH_ROWS = 10_000
#: A batch is written early once its text or image bytes reach this (images are large).
BATCH_BYTES = 32 * 1024 * 1024
# Every option that changes the bytes, spelled out: byte-identical re-exports rest on them.
# `created_by` in the footer names the pyarrow version, constant for an installation.
PARQUET_OPTIONS = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "write_page_index": False,
    "write_page_checksum": False,
    "store_schema": True,
}
_STRING = {"dtype": "string", "_type": "Value"}


def hf_features(header: dict) -> dict:
    """The `datasets` Features of the export, as `Features.to_dict()` spells them. A multi-label
    project's `labels` is a `Sequence` of ClassLabel: read as a list by every `datasets` release
    (4.x names it `List`, which 2.x and 3.x would not know)."""
    label = {"names": [c["name"] for c in header["classes"]], "_type": "ClassLabel"}
    features: dict = {"external_id": _STRING}
    if is_image(header):
        features["image"] = {"_type": "Image"}
    else:
        features["text"] = _STRING
    if is_multi_label(header):
        features["labels"] = {"feature": label, "_type": "Sequence"}
    else:
        features["label"] = label
    features["gold_source"] = _STRING
    features["agreement"] = {"dtype": "float64", "_type": "Value"}
    features["metadata"] = _STRING
    return features


def arrow_schema(header: dict) -> pa.Schema:
    """The Parquet files' schema: the arrow types `datasets` expects for the features (a
    ClassLabel is int64; an Image a struct of bytes and path), the features in its metadata."""
    types = {
        "external_id": pa.string(),
        "text": pa.string(),
        "image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        "label": pa.int64(),
        "labels": pa.list_(pa.int64()),
        "gold_source": pa.string(),
        "agreement": pa.float64(),
        "metadata": pa.string(),
    }
    features = hf_features(header)
    return pa.schema(
        [(name, types[name]) for name in features],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )


class SplitSummary(NamedTuple):
    """What the dataset card says about one split's file."""

    examples: int
    num_bytes: int  # of its arrow data, as `datasets` counts a split's size
    download_size: int  # of the Parquet file
    per_class: list[int]  # labelled items per class id


class _SplitFile:
    """One split's Parquet file: opened at its first item, written a batch at a time."""

    def __init__(self, path: Path, schema: pa.Schema, classes: int) -> None:
        self.path = path
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.num_bytes = 0
        self.per_class = [0] * classes
        self._pending: dict[str, list] = {name: [] for name in schema.names}
        self._pending_rows = 0
        self._pending_bytes = 0

    def add(self, record: dict, size: int, labels: list[int]) -> None:
        for name, value in record.items():
            self._pending[name].append(value)
        for class_id in labels:
            self.per_class[class_id] += 1
        self._pending_rows += 1
        self._pending_bytes += size
        if self._pending_rows >= BATCH_ROWS or self._pending_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, **PARQUET_OPTIONS)
        batch = pa.RecordBatch.from_pydict(self._pending, schema=self.schema)
        self.writer.write_batch(batch, row_group_size=BATCH_ROWS)
        self.rows += self._pending_rows
        self.num_bytes += batch.nbytes
        self._pending = {name: [] for name in self.schema.names}
        self._pending_rows = self._pending_bytes = 0

    def close(self, *, complete: bool = True) -> None:
        if complete:
            self._flush()
        if self.writer is not None:
            self.writer.close()

    def summary(self) -> SplitSummary:
        return SplitSummary(self.rows, self.num_bytes, self.path.stat().st_size, self.per_class)


def hf_export(
    header: dict,
    rows: Callable[[], Iterator[dict]],
    folder: Path,
    *,
    media_root: Path,
    version_name: str,
    content_hash: str,
) -> None:
    """Write the dataset folder into `folder`, an empty directory. One pass over the rows."""
    ids = class_ids(header)
    multi = is_multi_label(header)
    schema = arrow_schema(header)
    (folder / "data").mkdir()
    files: dict[str, _SplitFile] = {}
    try:
        for row in rows():
            labels = labelled_ids(row, ids, multi=multi)
            if not labels:
                continue
            split = row_split(row)
            if split not in files:
                path = folder / "data" / f"{split}-00000-of-00001.parquet"
                files[split] = _SplitFile(path, schema, len(ids))
            record, size = _record(header, row, labels, media_root=media_root)
            files[split].add(record, size, labels)
    except BaseException:
        for file in files.values():
            file.close(complete=False)
        raise
    for file in files.values():
        file.close()
    if not files:
        raise ExportError(NOTHING_LABELLED)
    card = dataset_card(
        header,
        version_name=version_name,
        content_hash=content_hash,
        splits={split: files[split].summary() for split in SPLITS if split in files},
    )
    (folder / "README.md").write_bytes(card.encode("utf-8"))


def _record(header: dict, row: dict, labels: list[int], *, media_root: Path) -> tuple[dict, int]:
    """A labelled row as a Parquet record, with its size for the batch budget."""
    gold = row["gold"]
    metadata = json.dumps(
        row.get("metadata"), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    record: dict = {"external_id": row["external_id"]}
    if is_image(header):
        data = image_bytes(media_root, row)
        # As `datasets` embeds an image: the bytes, and the file's name (its extension helps
        # readers that go by name).
        record["image"] = {"bytes": data, "path": PurePosixPath(row["image"]).name}
        size = len(data)
    else:
        record["text"] = row["text"]
        size = len(row["text"])
    if is_multi_label(header):
        record["labels"] = labels
    else:
        record["label"] = labels[0]
    record["gold_source"] = gold["source"]
    record["agreement"] = gold.get("agreement")
    record["metadata"] = metadata
    return record, size + len(metadata)


def dataset_card(
    header: dict,
    *,
    version_name: str,
    content_hash: str,
    splits: dict[str, SplitSummary],
) -> str:
    """README.md: the Hub's YAML front matter (`dataset_info` with the features and the split
    sizes, `configs` with each split's files), then a description for people."""
    return "\n".join(
        [
            "---",
            *_card_yaml(header, splits),
            "---",
            "",
            *_card_body(header, version_name, content_hash, splits),
            "",
        ]
    )


def _card_yaml(header: dict, splits: dict[str, SplitSummary]) -> list[str]:
    kind = "image" if is_image(header) else "text"
    lines = [
        f"pretty_name: {_yaml_str(header['project']['name'])}",
        "task_categories:",
        f"- {kind}-classification",
        "dataset_info:",
        "  features:",
    ]
    for name, feature in hf_features(header).items():
        lines.append(f"  - name: {name}")
        lines.extend(f"    {line}" for line in _yaml_feature(feature))
    lines.append("  splits:")
    for split, summary in splits.items():
        lines += [
            f"  - name: {split}",
            f"    num_bytes: {summary.num_bytes}",
            f"    num_examples: {summary.examples}",
        ]
    lines += [
        f"  download_size: {sum(s.download_size for s in splits.values())}",
        f"  dataset_size: {sum(s.num_bytes for s in splits.values())}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    return lines


def _yaml_feature(feature: dict) -> list[str]:
    """A feature as the Hub's YAML writes it (`Features._to_yaml_list`), for the kinds the
    export has."""
    kind = feature["_type"]
    if kind == "Value":
        return [f"dtype: {feature['dtype']}"]
    if kind == "Image":
        return ["dtype: image"]
    if kind == "ClassLabel":
        return ["dtype:", *(f"  {line}" for line in _yaml_class_label(feature))]
    if kind == "Sequence":
        return ["sequence:", *(f"  {line}" for line in _yaml_class_label(feature["feature"]))]
    raise ValueError(f"No YAML for feature type {kind!r}.")


def _yaml_class_label(feature: dict) -> list[str]:
    # The Hub wants the names as a mapping from id (a string) to name.
    names = [f"    '{i}': {_yaml_str(name)}" for i, name in enumerate(feature["names"])]
    return ["class_label:", "  names:", *names]


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar that any YAML 1.1 or 1.2 parser reads back as `value`:
    quotes and backslashes escaped, and so is every character YAML does not allow as is or
    that YAML 1.1 reads as a line break (NEL, LS, PS)."""
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif (
            0x20 <= code < 0x7F
            or 0xA0 <= code < 0xD800
            or 0xE000 <= code < 0xFFFE
            or 0x10000 <= code <= 0x10FFFF
        ) and char not in "\u2028\u2029\ufeff":
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def _card_body(
    header: dict,
    version_name: str,
    content_hash: str,
    splits: dict[str, SplitSummary],
) -> list[str]:
    project = header["project"]
    multi = is_multi_label(header)
    split = header["split"]
    fractions = ", ".join(f"{name} {share:g}" for name, share in split["fractions"].items())
    labelled = sum(s.examples for s in splits.values())
    label_column = "labels" if multi else "label"
    content_column = "image" if is_image(header) else "text"
    lines = [
        f"# {_md(project['name'])}",
        "",
        f"Dataset version **{_md(version_name)}** of the DataPrepOps project "
        f"“{_md(project['name'])}”, content hash `{content_hash}`.",
        "",
        f"- Items: {'images' if is_image(header) else 'texts'}, "
        f"{labelled} labelled of {header['items']} in the version. Items without a "
        "final label (not answered, a tie waiting for review, still waiting for answers) are "
        "left out.",
        "- Labels: "
        + (
            "one or more classes per item (`labels`, a list of class ids)."
            if multi
            else "one class per item (`label`, a class id)."
        ),
        f"- Splits: {fractions}, seed `{_md(split['seed'])}`, "
        + ("stratified by class." if split["stratified"] else "not stratified."),
        "",
        "## Columns",
        "",
        "| column | content |",
        "|---|---|",
        "| `external_id` | the item's id in the imported data |",
        f"| `{content_column}` | the item's {content_column} |",
        f"| `{label_column}` | the final label, as class ids of the schema below |",
        "| `gold_source` | how it was reached: adjudicated, unanimous, majority or consensus |",
        "| `agreement` | share of the answers that agree with it (empty if not measured) |",
        "| `metadata` | the item's metadata, as JSON |",
        "",
        "## Label schema",
        "",
        "Class ids are positions in the schema; retired classes keep theirs.",
        "",
        "| id | class | retired |",
        "|---:|---|---|",
    ]
    for class_id, c in enumerate(header["classes"]):
        lines.append(f"| {class_id} | {_md(c['name'])} | {'yes' if c['retired'] else ''} |")
    lines += [
        "",
        "## Labelled items per class and split",
        "",
        "| id | class | " + " | ".join(splits) + " | all |",
        "|---:|---|" + "---:|" * (len(splits) + 1),
    ]
    for class_id, c in enumerate(header["classes"]):
        per_split = [s.per_class[class_id] for s in splits.values()]
        cells = " | ".join(str(n) for n in [*per_split, sum(per_split)])
        lines.append(f"| {class_id} | {_md(c['name'])} | {cells} |")
    cells = " | ".join(str(n) for n in [*(s.examples for s in splits.values()), labelled])
    lines.append(f"| | **items** | {cells} |")
    if multi:
        lines += ["", "An item with several classes counts once in each."]
    return lines


def _md(text: str) -> str:
    """Text for a Markdown table cell or line: no pipe or line break can break the table."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'")
    return " ".join(text.split())

"""Exports of one dataset version (curation.version_exports, curation.hf_export), on versions
built here as the version file's reader hands them over: a header and a callable giving a
fresh iterator over the item rows."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from curation import hf_export
from curation.version_exports import (
    CSV_COLUMNS,
    FORMATS,
    ExportError,
    version_export,
    version_export_stream,
)

AT = "2025-03-01T10:00:00+00:00"
LATER = "2025-03-02T08:30:00+00:00"
SPLIT = {"seed": "s33d", "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}}


def answer(who: str, *labels: str, skipped: bool = False) -> dict:
    return {
        "annotator": who,
        "labels": list(labels),
        "skipped": skipped,
        "created_at": AT,
        "updated_at": LATER,
    }


def gold(labels: list[str] | None, source: str, agreement: float | None) -> dict:
    return {"labels": labels, "source": source, "agreement": agreement}


def row(item_id: int, external_id: str, split: str, content: dict, **fields) -> dict:
    return {
        "item_id": item_id,
        "external_id": external_id,
        **content,
        "metadata": fields.get("metadata", {}),
        "status": fields.get("status", "complete"),
        "gold": fields.get("gold"),
        "answers": fields.get("answers", []),
        "split": split,
    }


def classes(*names: str, retired: tuple[str, ...] = ()) -> list[dict]:
    return [
        {
            "name": name,
            "key": str(i + 1),
            "color": "#336699",
            "order": i,
            "retired": name in retired,
        }
        for i, name in enumerate(names)
    ]


def header(name: str, kind: str, mode: str, schema: list[dict], items: int) -> dict:
    return {
        "format": "dataprepops-dataset",
        "format_version": 1,
        "project": {"name": name, "item_kind": kind, "labeling_mode": mode, "overlap": 2},
        "classes": schema,
        "split": {**SPLIT, "stratified": True},
        "items": items,
    }


class Version:
    """A version as its reader gives it, with what a test needs to check an export."""

    def __init__(self, head: dict, rows: list[dict], media_root: Path | None = None) -> None:
        self.header = head
        self.rows = rows
        self.media_root = media_root or Path("/nonexistent-media")

    def read(self):
        return iter(self.rows)

    def export(self, fmt: str, output: Path) -> list[Path]:
        return version_export(
            self.header,
            self.read,
            fmt,
            output,
            media_root=self.media_root,
            version_name="v3 “spring”",
            content_hash="sha256:" + "ab" * 32,
        )

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.header["classes"]]

    def labelled(self) -> list[dict]:
        return [r for r in self.rows if r["gold"] and r["gold"]["labels"]]


@pytest.fixture
def text_version() -> Version:
    """Single-label, a retired class in the middle; labelled items in every split beside
    unanswered, incomplete, tied and skipped ones; formula-looking and unicode text."""
    t = "text"
    rows = [
        row(1, "t1", "train", {t: "Great flight 😀 — merci"}, metadata={"airline": "Delta"},
            gold=gold(["positive"], "unanimous", 1.0),
            answers=[answer("ann", "positive"), answer("bob", "positive")]),
        row(2, "t2", "train", {t: '=HYPERLINK("http://x.example","click")'},
            metadata={"airline": "United", "retweets": 3},
            gold=gold(["negative"], "majority", 2 / 3),
            answers=[answer("ann", "negative"), answer("bob", "negative"),
                     answer("cy", "positive")]),
        row(3, "t3", "train", {t: 'Line one\nline two, "quoted"'},
            gold=gold(None, "tie", 0.5),
            answers=[answer("ann", "negative"), answer("bob", "positive")]),
        row(4, "t4", "train", {t: "nobody answered"}, status="incomplete",
            metadata={"airline": "Delta"}),
        row(5, "t5", "train", {t: "+1 for the crew"}, status="incomplete",
            gold=gold(None, "incomplete", None), answers=[answer("ann", "positive")]),
        row(6, "t6", "validation", {t: "Très bien, l'équipage"}, metadata={"lang": "fr"},
            gold=gold(["neutral"], "adjudicated", None),
            answers=[answer("ann", "neutral"), answer("bob", "negative")]),
        row(7, "t7", "validation", {t: "-5 stars"}, metadata={"note": None, "tags": ["a", "b"]},
            gold=gold(["negative"], "unanimous", 1.0), answers=[answer("ann", "negative")]),
        row(8, "@t8", "test", {t: "@airline thanks"}, metadata={"airline": "=cmd|' /C calc'!A0"},
            gold=gold(["positive"], "unanimous", 1.0), answers=[answer("=ann", "positive")]),
        row(9, "t9", "test", {t: "skipped by all"}, answers=[answer("ann", skipped=True)]),
    ]  # fmt: skip
    schema = classes("negative", "neutral", "positive", retired=("neutral",))
    return Version(header("Airline “tweets” | 2025", "text", "single", schema, 9), rows)


@pytest.fixture
def multi_version() -> Version:
    """Multi-label, a class name that needs quoting in YAML; no labelled validation item."""
    t = "text"
    rows = [
        row(1, "m1", "train", {t: "Tasty but slow"},
            gold=gold(["service", "food"], "majority", 0.5),
            answers=[answer("ann", "food", "service"), answer("bob", "service")]),
        row(2, "m2", "train", {t: "Too expensive"},
            gold=gold(['price: "€" #1\\'], "unanimous", 1.0),
            answers=[answer("ann", 'price: "€" #1\\')]),
        row(3, "m3", "validation", {t: "fine"}, gold=gold([], "unanimous", 1.0),
            answers=[answer("ann")]),
        row(4, "m4", "test", {t: "great food"}, gold=gold(["food"], "unanimous", 1.0),
            answers=[answer("ann", "food")]),
        row(5, "m5", "test", {t: "n/a"}),
    ]  # fmt: skip
    schema = classes("food", "service", 'price: "€" #1\\')
    return Version(header("Restaurant reviews", "text", "multi", schema, 5), rows)


IMAGE_CLASSES = ("zero", "../x", "CON", "A b", "a-b", "😀")


def write_digits(media_root: Path, count: int) -> list[str]:
    """Small real PNGs (sklearn's 8x8 digits) in a media folder; their stored names."""
    digits = load_digits()
    names = []
    for i in range(count):
        name = f"items/{i % 3}/digit_{i}.PNG" if i == 0 else f"items/{i % 3}/digit_{i}.png"
        path = media_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(path, format="PNG")
        names.append(name)
    return names


@pytest.fixture
def image_version(tmp_path: Path) -> Version:
    """Single-label images whose external ids and class names are unsafe as file names or
    collide once made safe."""
    media = tmp_path / "media"
    img = [{"image": name} for name in write_digits(media, 9)]
    rows = [
        row(1, "Img 1", "train", img[0], gold=gold(["zero"], "unanimous", 1.0),
            answers=[answer("ann", "zero")], metadata={"scanner": "a"}),
        row(2, "img-1", "train", img[1], gold=gold(["zero"], "majority", 0.75),
            answers=[answer("ann", "zero")]),
        row(3, "../../etc/passwd", "train", img[2], gold=gold(["../x"], "unanimous", 1.0),
            answers=[answer("ann", "../x")]),
        row(4, "con", "validation", img[3], gold=gold(["CON"], "adjudicated", None),
            answers=[answer("ann", "CON")]),
        row(5, "😀", "test", img[4], gold=gold(["😀"], "unanimous", 1.0),
            answers=[answer("ann", "😀")]),
        row(6, "a b", "test", img[5], gold=gold(["A b"], "unanimous", 1.0),
            answers=[answer("ann", "A b")]),
        row(7, "x", "test", img[6], gold=gold(["a-b"], "unanimous", 1.0),
            answers=[answer("ann", "a-b")]),
        row(8, "tied", "train", img[7], gold=gold(None, "tie", 0.5),
            answers=[answer("ann", "zero"), answer("bob", "CON")]),
        row(9, "waiting", "train", img[8], status="incomplete",
            gold=gold(None, "incomplete", None), answers=[answer("ann", "zero")]),
    ]  # fmt: skip
    return Version(
        header("Digits", "image", "single", classes(*IMAGE_CLASSES), 9), rows, media_root=media
    )


@pytest.fixture
def multi_image_version(tmp_path: Path) -> Version:
    media = tmp_path / "media"
    img = [{"image": name} for name in write_digits(media, 2)]
    rows = [
        row(1, "both", "train", img[0], gold=gold(["A b", "zero"], "unanimous", 1.0),
            answers=[answer("ann", "zero", "A b")]),
        row(2, "one", "test", img[1], gold=gold(["CON"], "unanimous", 1.0),
            answers=[answer("ann", "CON")]),
    ]  # fmt: skip
    return Version(
        header("Digits multi", "image", "multi", classes(*IMAGE_CLASSES), 2), rows, media_root=media
    )


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def feature(card: dict, name: str) -> dict:
    return next(f for f in card["dataset_info"]["features"] if f["name"] == name)


def table_rows(card: str, heading: str) -> list[list[str]]:
    """The cells of the Markdown table under `heading` (header and separator left out)."""
    section = card.split(f"## {heading}\n")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


@pytest.fixture(scope="module")
def hf_datasets(tmp_path_factory):
    """The `datasets` package, offline, its caches in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield pytest.importorskip("datasets")


# JSON Lines


def test_jsonl_export_round_trips_every_row(text_version: Version, tmp_path: Path) -> None:
    output = tmp_path / "out" / "v3.jsonl"
    assert text_version.export("jsonl", output) == [output]
    lines = output.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == text_version.rows
    for line, source in zip(lines, text_version.rows, strict=False):
        assert line == json.dumps(source, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert "😀" in lines[0]


def test_streamed_download_gives_the_bytes_of_the_file(
    text_version: Version, tmp_path: Path
) -> None:
    for fmt in ("jsonl", "csv"):
        output = tmp_path / f"v3.{fmt}"
        text_version.export(fmt, output)
        streamed = version_export_stream(text_version.header, text_version.read, fmt)
        assert b"".join(streamed) == output.read_bytes()


# CSV


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_csv_has_a_row_per_answer_and_one_for_an_unanswered_item(
    text_version: Version, tmp_path: Path
) -> None:
    output = tmp_path / "v3.csv"
    text_version.export("csv", output)
    with output.open(encoding="utf-8", newline="") as file:
        columns = next(csv.reader(file))
    keys = ["airline", "lang", "note", "retweets", "tags"]
    assert columns == [*CSV_COLUMNS, *(f"meta.{key}" for key in keys)]
    lines = read_csv(output)
    expected = [(r["item_id"], a) for r in text_version.rows for a in r["answers"] or [None]]
    assert [int(line["item_id"]) for line in lines] == [item_id for item_id, _ in expected]
    for line, (item_id, given) in zip(lines, expected, strict=True):
        source = text_version.rows[item_id - 1]
        assert line["split"] == source["split"]
        assert line["status"] == source["status"]
        assert line["gold_source"] == (source["gold"]["source"] if source["gold"] else "")
        if given is None:
            assert line["annotator"] == line["labels"] == line["skipped"] == ""
        else:
            assert line["labels"] == "|".join(given["labels"])
            assert line["skipped"] == ("true" if given["skipped"] else "false")
            assert (line["created_at"], line["updated_at"]) == (AT, LATER)
    majority = next(line for line in lines if line["item_id"] == "2")
    assert majority["gold_labels"] == "negative"
    assert float(majority["gold_agreement"]) == 2 / 3
    assert majority["meta.retweets"] == "3"
    assert majority["meta.lang"] == ""
    tie = next(line for line in lines if line["item_id"] == "3")
    assert (tie["gold_labels"], tie["gold_source"], tie["gold_agreement"]) == ("", "tie", "0.5")
    assert tie["text"] == 'Line one\nline two, "quoted"'
    assert next(line for line in lines if line["item_id"] == "7")["meta.tags"] == '["a","b"]'
    assert output.read_bytes().count(b"\r\n") == len(lines) + 1


def test_csv_neutralises_formula_cells(text_version: Version, tmp_path: Path) -> None:
    output = tmp_path / "v3.csv"
    text_version.export("csv", output)
    lines = {line["item_id"]: line for line in read_csv(output)}
    assert lines["2"]["text"] == "'" + text_version.rows[1]["text"]
    assert lines["5"]["text"] == "'+1 for the crew"
    assert lines["7"]["text"] == "'-5 stars"
    assert lines["8"]["external_id"] == "'@t8"
    assert lines["8"]["annotator"] == "'=ann"
    assert lines["8"]["meta.airline"] == "'=cmd|' /C calc'!A0"
    assert lines["1"]["text"] == "Great flight 😀 — merci"


def test_csv_of_an_image_project_names_the_stored_file(
    image_version: Version, tmp_path: Path
) -> None:
    output = tmp_path / "digits.csv"
    image_version.export("csv", output)
    lines = read_csv(output)
    assert "text" not in lines[0]
    expected = [r["image"] for r in image_version.rows for _ in r["answers"] or [None]]
    assert [line["image"] for line in lines] == expected


# Hugging Face


def expected_records(version: Version, split: str) -> list[dict]:
    ids = {name: i for i, name in enumerate(version.names)}
    records = []
    for r in version.labelled():
        if r["split"] != split:
            continue
        record = {"external_id": r["external_id"]}
        if "image" in r:
            data = (version.media_root / r["image"]).read_bytes()
            record["image"] = {"bytes": data, "path": Path(r["image"]).name}
        else:
            record["text"] = r["text"]
        labels = sorted(ids[name] for name in r["gold"]["labels"])
        if version.header["project"]["labeling_mode"] == "multi":
            record["labels"] = labels
        else:
            record["label"] = labels[0]
        record["gold_source"] = r["gold"]["source"]
        record["agreement"] = r["gold"]["agreement"]
        record["metadata"] = json.dumps(
            r["metadata"], ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
        records.append(record)
    return records


def test_hf_export_holds_the_labelled_items_of_each_split(
    text_version: Version, tmp_path: Path
) -> None:
    folder = tmp_path / "hf"
    written = text_version.export("hf", folder)
    data = [
        folder / "data" / f"{s}-00000-of-00001.parquet" for s in ("test", "train", "validation")
    ]
    assert written == sorted([folder / "README.md", *data])
    for split in ("train", "validation", "test"):
        table = pq.read_table(folder / "data" / f"{split}-00000-of-00001.parquet")
        assert table.column_names == [
            "external_id",
            "text",
            "label",
            "gold_source",
            "agreement",
            "metadata",
        ]
        assert table.to_pylist() == expected_records(text_version, split)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary folder left


def test_hf_parquet_schema_names_the_classes_in_schema_order(
    text_version: Version, tmp_path: Path
) -> None:
    text_version.export("hf", tmp_path / "hf")
    schema = pq.read_schema(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"] == {
        "names": ["negative", "neutral", "positive"],
        "_type": "ClassLabel",
    }
    assert features["text"] == {"dtype": "string", "_type": "Value"}
    assert list(features) == schema.names


def test_hf_card_yaml_follows_the_hub_format(text_version: Version, tmp_path: Path) -> None:
    text_version.export("hf", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["pretty_name"] == "Airline “tweets” | 2025"
    assert feature(meta, "label") == {
        "name": "label",
        "dtype": {"class_label": {"names": {"0": "negative", "1": "neutral", "2": "positive"}}},
    }
    assert feature(meta, "text") == {"name": "text", "dtype": "string"}
    assert feature(meta, "agreement") == {"name": "agreement", "dtype": "float64"}
    splits = meta["dataset_info"]["splits"]
    assert [(s["name"], s["num_examples"]) for s in splits] == [
        ("train", 2),
        ("validation", 2),
        ("test", 1),
    ]
    assert all(s["num_bytes"] > 0 for s in splits)
    assert meta["dataset_info"]["dataset_size"] == sum(s["num_bytes"] for s in splits)
    parquet = (tmp_path / "hf" / "data").iterdir()
    assert meta["dataset_info"]["download_size"] == sum(p.stat().st_size for p in parquet)
    assert meta["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": split, "path": f"data/{split}-*"}
                for split in ("train", "validation", "test")
            ],
        }
    ]


def test_hf_card_describes_the_version_and_counts_classes_per_split(
    text_version: Version, tmp_path: Path
) -> None:
    text_version.export("hf", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "# Airline “tweets” \\| 2025" in card
    assert "**v3 “spring”**" in card and "sha256:" + "ab" * 32 in card
    assert "texts, 5 labelled of 9" in card
    assert table_rows(card, "Label schema") == [
        ["0", "negative", ""],
        ["1", "neutral", "yes"],
        ["2", "positive", ""],
    ]
    counts = Counter((r["split"], r["gold"]["labels"][0]) for r in text_version.labelled())
    splits = ("train", "validation", "test")
    expected = [
        [
            str(i),
            name,
            *(str(counts[s, name]) for s in splits),
            str(sum(counts[s, name] for s in splits)),
        ]
        for i, name in enumerate(text_version.names)
    ]
    items = Counter(r["split"] for r in text_version.labelled())
    expected.append(["", "**items**", *(str(items[s]) for s in splits), "5"])
    assert table_rows(card, "Labelled items per class and split") == expected


def test_hf_multi_label_export_lists_class_ids_and_leaves_out_empty_splits(
    multi_version: Version, tmp_path: Path
) -> None:
    folder = tmp_path / "hf"
    multi_version.export("hf", folder)
    assert sorted(p.name for p in (folder / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    train = pq.read_table(folder / "data" / "train-00000-of-00001.parquet")
    assert train.to_pylist() == expected_records(multi_version, "train")
    assert train.column("labels").to_pylist() == [[0, 1], [2]]
    features = json.loads(train.schema.metadata[b"huggingface"])["info"]["features"]
    label = {"names": multi_version.names, "_type": "ClassLabel"}
    assert features["labels"] == {"feature": label, "_type": "Sequence"}
    meta = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    names = dict(enumerate(multi_version.names))
    assert feature(meta, "labels") == {
        "name": "labels",
        "sequence": {"class_label": {"names": {str(i): n for i, n in names.items()}}},
    }
    assert [s["name"] for s in meta["dataset_info"]["splits"]] == ["train", "test"]
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "test"]


def test_hf_image_export_embeds_the_image_files(image_version: Version, tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    image_version.export("hf", folder)
    for split in ("train", "validation", "test"):
        table = pq.read_table(folder / "data" / f"{split}-00000-of-00001.parquet")
        assert table.to_pylist() == expected_records(image_version, split)
    train = pq.read_table(folder / "data" / "train-00000-of-00001.parquet").to_pylist()
    first = image_version.rows[0]
    assert train[0]["image"]["bytes"] == (image_version.media_root / first["image"]).read_bytes()
    schema = pq.read_schema(folder / "data" / "train-00000-of-00001.parquet")
    assert json.loads(schema.metadata[b"huggingface"])["info"]["features"]["image"] == {
        "_type": "Image"
    }
    meta = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    assert feature(meta, "image") == {"name": "image", "dtype": "image"}
    assert meta["task_categories"] == ["image-classification"]
    assert list(feature(meta, "label")["dtype"]["class_label"]["names"].values()) == list(
        IMAGE_CLASSES
    )


def test_hf_export_writes_a_large_split_in_row_groups(
    text_version: Version, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = [
        {**text_version.rows[0], "item_id": i, "external_id": f"n{i}", "text": f"item {i}"}
        for i in range(1, 8)
    ]
    version = Version(text_version.header, many)
    monkeypatch.setattr(hf_export, "BATCH_ROWS", 3)
    version.export("hf", tmp_path / "hf")
    train = pq.ParquetFile(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    assert [train.metadata.row_group(i).num_rows for i in range(train.num_row_groups)] == [3, 3, 1]
    assert train.read().to_pylist() == expected_records(version, "train")


def test_datasets_loads_the_text_export_with_its_class_labels(
    hf_datasets, text_version: Version, tmp_path: Path
) -> None:
    text_version.export("hf", tmp_path / "hf")
    card = hf_datasets.load_dataset_builder(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    assert card.info.features["label"].names == text_version.names
    assert {name: s.num_examples for name, s in card.info.splits.items()} == {
        "train": 2,
        "validation": 2,
        "test": 1,
    }
    # Checks the split sizes of the card against the files.
    loaded = hf_datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in loaded.items()} == {
        "train": 2,
        "validation": 2,
        "test": 1,
    }
    assert loaded["train"].features["label"].names == text_version.names
    assert loaded["validation"][0] == expected_records(text_version, "validation")[0]
    assert loaded["validation"].features["label"].int2str(loaded["validation"][0]["label"]) == (
        "neutral"
    )
    alone = hf_datasets.Dataset.from_parquet(
        str(tmp_path / "hf" / "data" / "test-00000-of-00001.parquet"),
        cache_dir=str(tmp_path / "cache"),
    )
    assert alone.features["label"].names == text_version.names


def test_datasets_loads_the_multi_label_export(
    hf_datasets, multi_version: Version, tmp_path: Path
) -> None:
    multi_version.export("hf", tmp_path / "hf")
    loaded = hf_datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["test", "train"]
    assert loaded["train"].features["labels"].feature.names == multi_version.names
    assert loaded["train"]["labels"] == [[0, 1], [2]]


def test_datasets_loads_the_image_export_as_images(
    hf_datasets, image_version: Version, tmp_path: Path
) -> None:
    image_version.export("hf", tmp_path / "hf")
    loaded = hf_datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].features["label"].names == list(IMAGE_CLASSES)
    assert {name: len(split) for name, split in loaded.items()} == {
        "train": 3,
        "validation": 1,
        "test": 3,
    }
    first = loaded["train"][0]
    source = Image.open(image_version.media_root / image_version.rows[0]["image"])
    assert np.array_equal(np.asarray(first["image"]), np.asarray(source))
    assert first["external_id"] == "Img 1"


# Image folders


def test_folders_export_copies_images_per_split_and_class(
    image_version: Version, tmp_path: Path
) -> None:
    folder = tmp_path / "folders"
    written = image_version.export("folders", folder)
    layout = {
        "train/zero/img-1.png": 1,
        "train/zero/img-1--2.png": 2,  # "img-1" again: the item id keeps it apart
        "train/x/etcpasswd.png": 3,
        "validation/con_/con_.png": 4,  # CON is reserved on Windows
        "test/item--5/item.png": 5,  # nothing ASCII in the name
        "test/a-b/a-b.png": 6,
        "test/a-b--4/x.png": 7,  # class "a-b" after class "A b"
    }
    files = files_under(folder)
    assert sorted(files) == sorted([*layout, "labels.csv"])
    assert written == sorted(folder / name for name in files)
    for name, item_id in layout.items():
        source = image_version.media_root / image_version.rows[item_id - 1]["image"]
        assert files[name] == source.read_bytes()
    assert all(p.resolve().is_relative_to(folder.resolve()) for p in folder.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folders", "media"]
    with (folder / "labels.csv").open(encoding="utf-8", newline="") as file:
        labels = list(csv.DictReader(file))
    assert [(line["file"], int(line["item_id"])) for line in labels] == list(layout.items())
    by_item = {int(line["item_id"]): line for line in labels}
    for item_id in layout.values():
        source = image_version.rows[item_id - 1]
        assert by_item[item_id]["class"] == source["gold"]["labels"][0]
        assert by_item[item_id]["external_id"] == source["external_id"]
        assert by_item[item_id]["split"] == source["split"]


def test_folders_export_copies_a_multi_label_image_into_each_class(
    multi_image_version: Version, tmp_path: Path
) -> None:
    folder = tmp_path / "folders"
    multi_image_version.export("folders", folder)
    files = files_under(folder)
    assert sorted(files) == [
        "labels.csv",
        "test/con_/one.png",
        "train/a-b/both.png",
        "train/zero/both.png",
    ]
    assert files["train/a-b/both.png"] == files["train/zero/both.png"]
    labels = read_csv(folder / "labels.csv")
    assert [(line["class"], line["file"]) for line in labels] == [
        ("zero", "train/zero/both.png"),
        ("A b", "train/a-b/both.png"),
        ("CON", "test/con_/one.png"),
    ]


# Byte-identical re-exports


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [
        ("jsonl", "text"),
        ("csv", "text"),
        ("hf", "text"),
        ("hf", "multi"),
        ("hf", "image"),
        ("folders", "image"),
        ("folders", "multi_image"),
    ],
)
def test_exporting_a_version_twice_gives_identical_bytes(
    fmt: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    version: Version = request.getfixturevalue(f"{kind}_version")
    first = version.export(fmt, tmp_path / "first" / "export")
    second = version.export(fmt, tmp_path / "second" / "export")
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert a.relative_to(tmp_path / "first") == b.relative_to(tmp_path / "second")
        assert a.read_bytes() == b.read_bytes()


# Refusals


def test_unknown_format_is_refused(text_version: Version, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"Unknown export format 'xlsx'.*jsonl, csv, hf"):
        text_version.export("xlsx", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="Only jsonl and csv exports can be streamed"):
        version_export_stream(text_version.header, text_version.read, "hf")
    assert FORMATS == ("jsonl", "csv", "hf", "folders")


def test_folders_export_of_a_text_project_is_refused(text_version: Version, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="folders export is for image projects"):
        text_version.export("folders", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["hf", "folders"])
def test_folder_export_refuses_a_folder_that_holds_files(
    fmt: str, image_version: Version, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    (output / "old").mkdir(parents=True)
    (output / "old" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not empty"):
        image_version.export(fmt, output)
    assert files_under(output) == {"old/keep.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["media", "out"]


@pytest.mark.parametrize("fmt", ["hf", "folders"])
def test_folder_export_refuses_a_file_in_its_place(
    fmt: str, image_version: Version, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    output.write_text("mine")
    with pytest.raises(ExportError, match="is a file"):
        image_version.export(fmt, output)
    assert output.read_text() == "mine"


def test_folder_export_fills_an_empty_folder(text_version: Version, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    written = text_version.export("hf", output)
    assert output / "README.md" in written


def test_file_export_replaces_a_file_but_refuses_a_folder(
    text_version: Version, tmp_path: Path
) -> None:
    output = tmp_path / "v3.csv"
    output.write_text("old export")
    text_version.export("csv", output)
    assert output.read_bytes().startswith(b"item_id,external_id,text,")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        text_version.export("jsonl", tmp_path / "folder.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.jsonl", "v3.csv"]


@pytest.mark.parametrize("fmt", ["hf", "folders"])
def test_a_missing_image_file_stops_the_export_and_leaves_nothing(
    fmt: str, image_version: Version, tmp_path: Path
) -> None:
    (image_version.media_root / image_version.rows[5]["image"]).unlink()
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(ExportError, match=r"Item 6's image file .* is missing"):
        image_version.export(fmt, exports / "out")
    assert list(exports.iterdir()) == []


def test_an_image_path_outside_the_media_folder_is_refused(
    image_version: Version, tmp_path: Path
) -> None:
    image_version.rows[0]["image"] = "../outside.png"
    (tmp_path / "outside.png").write_bytes(b"not yours")
    with pytest.raises(ExportError, match="leaves the media folder"):
        image_version.export("folders", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_version_without_labelled_items_has_no_training_export(
    text_version: Version, tmp_path: Path
) -> None:
    unlabelled = Version(text_version.header, [r for r in text_version.rows if not r["gold"]])
    with pytest.raises(ExportError, match="no labelled items"):
        unlabelled.export("hf", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    unlabelled.export("jsonl", tmp_path / "all.jsonl")  # the items are still exportable
    assert len(io.BytesIO((tmp_path / "all.jsonl").read_bytes()).readlines()) == 2


def test_a_label_outside_the_schema_is_refused(text_version: Version, tmp_path: Path) -> None:
    text_version.rows[0]["gold"] = gold(["sarcastic"], "unanimous", 1.0)
    with pytest.raises(ExportError, match="'sarcastic', which is not a class"):
        text_version.export("hf", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

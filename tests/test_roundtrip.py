"""Property tests: whatever text a CSV holds comes back unchanged in the export, and no exported
CSV cell can run as a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotations.exports import csv_chunks, jsonl_chunks
from annotations.imports import import_text_items
from annotations.models import Project
from annotations.services import project_create

# What an import accepts: any text without NUL or lone surrogates (those are refused with a
# located error, tested in test_imports).
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=200,
).filter(lambda t: t.strip())
ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda t: t.strip() == t and t)

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_file(rows: list[tuple[str, str]]) -> io.BytesIO:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "text"])
    writer.writerows(rows)
    return io.BytesIO(out.getvalue().encode())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.tuples(ids, texts), min_size=1, max_size=8, unique_by=lambda r: r[0]))
def test_any_text_imported_from_csv_is_exported_unchanged_and_csv_cells_are_inert(db, rows):
    project = project_create(name="Round trip", classes=["a", "b"])
    try:
        result = import_text_items(project=project, fileobj=_csv_file(rows), filename="in.csv")
        assert result.created == len(rows)

        exported = [json.loads(line) for line in "".join(jsonl_chunks(project)).split("\n") if line]
        assert {(e["external_id"], e["text"]) for e in exported} == set(rows)

        exported_csv = "".join(csv_chunks(project))
        cells = [c for row in csv.reader(io.StringIO(exported_csv)) for c in row]
        assert not [c for c in cells if c.startswith(FORMULA_START)]
        ids_out = {row["external_id"] for row in csv.DictReader(io.StringIO(exported_csv))}
        assert ids_out == {"'" + i if i.startswith(FORMULA_START) else i for i, _ in rows}
    finally:
        Project.objects.filter(pk=project.pk).delete()

"""Indexes for the data browser's text search and metadata filters, on PostgreSQL only (SQLite
searches with a plain `contains` and scans the metadata)."""

from django.db import migrations

FORWARD = [
    "CREATE INDEX IF NOT EXISTS item_text_search_idx ON annotations_item "
    "USING gin (to_tsvector('simple'::regconfig, text))",
    "CREATE INDEX IF NOT EXISTS item_metadata_idx ON annotations_item "
    "USING gin (metadata jsonb_path_ops)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS item_text_search_idx",
    "DROP INDEX IF EXISTS item_metadata_idx",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("annotations", "0007_item_suggestion")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]

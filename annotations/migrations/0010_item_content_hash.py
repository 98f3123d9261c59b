"""Item.content_hash: the exact-duplicate key of a text item's normalised text or an image
item's bytes (`annotations.content_hash`), indexed per project.

Existing text items are hashed here, a batch of ids at a time so a million items never sit in
memory; image items are left empty (hashing them reads every file) and are filled by the next
duplicates analysis, which hashes whatever has no hash yet.
"""

import hashlib
import re
import unicodedata

from django.db import migrations, models

BATCH = 5000
_SPACES = re.compile(r"\s+")


def _text_hash(text):
    # A copy of annotations.content_hash.text_hash as of this migration: migrations must not
    # change when the module does.
    normalised = _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    digest = hashlib.sha256(normalised.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def fill_text_hashes(apps, schema_editor):
    Item = apps.get_model("annotations", "Item")
    connection = schema_editor.connection
    table = connection.ops.quote_name(Item._meta.db_table)
    last = 0
    while True:
        rows = list(
            Item.objects.filter(pk__gt=last, content_hash__isnull=True)
            .exclude(text="")
            .order_by("pk")
            .values_list("pk", "text")[:BATCH]
        )
        if not rows:
            return
        last = rows[-1][0]
        ids = [pk for pk, _ in rows]
        hashes = [_text_hash(text) for _, text in rows]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} AS item SET content_hash = new.hash "
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS new(id, hash) "
                    "WHERE item.id = new.id",
                    [ids, hashes],
                )
        else:
            items = [Item(pk=pk, content_hash=value) for pk, value in zip(ids, hashes)]
            Item.objects.bulk_update(items, ["content_hash"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [("annotations", "0009_item_actions")]

    operations = [
        migrations.AddField(
            model_name="item",
            name="content_hash",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(fill_text_hashes, migrations.RunPython.noop, elidable=True),
        # After the fill: one index build instead of a million index updates.
        migrations.AddIndex(
            model_name="item",
            index=models.Index(fields=["project", "content_hash"], name="item_content_hash_idx"),
        ),
    ]

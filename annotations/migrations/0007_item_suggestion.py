"""The model's suggestion stored on each ranked item by the training worker, so the web
processes read it with the row instead of featurizing the item and loading a model.

Nullable columns without a default or a CHECK: PostgreSQL adds them to a table of any size by
changing its catalogue only (no rewrite, no scan)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0006_drop_annotation_changed_idx"),
    ]

    operations = [
        migrations.AddField(
            model_name="item",
            name="suggestion",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="item",
            name="suggestion_version",
            field=models.IntegerField(blank=True, editable=False, null=True),
        ),
    ]

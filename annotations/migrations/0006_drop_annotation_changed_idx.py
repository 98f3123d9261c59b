"""The trainer catches up from `GoldLabel.updated_at` (`gold_changed_idx`) since gold labels
exist; nothing reads answers by (project, updated_at) any more, and the index cost a write on
every submission."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0005_label_classes"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="annotation", name="annotation_changed_idx"),
    ]

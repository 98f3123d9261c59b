"""Indexes the data browser's plans need at 1M items (benchmarks/README.md, "Data browser"):
a project's items in id order, which every page and bounded count walks; the "Answers" sort;
the "Agreement" sort."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotations', '0010_item_content_hash'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='goldlabel',
            index=models.Index(fields=['project', 'agreement', 'item'], name='gold_agreement_idx'),
        ),
        migrations.AddIndex(
            model_name='item',
            index=models.Index(fields=['project', 'id'], name='item_browse_idx'),
        ),
        migrations.AddIndex(
            model_name='item',
            index=models.Index(fields=['project', 'annotation_count', 'id'], name='item_answers_idx'),
        ),
    ]

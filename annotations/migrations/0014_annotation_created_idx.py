"""The dashboard's refresh recounts the answers given in the last hours of a project
(`curation.dashboard`): a range of (project, created_at), which no other index serves. It costs
an index entry per answer, and one per edit like the table's other indexes (an edit changes
`updated_at`, which annotation_hist_idx holds, so it is never a heap-only update)."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotations', '0013_item_text_vector'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='annotation',
            index=models.Index(fields=['project', 'created_at'], name='annotation_created_idx'),
        ),
    ]

"""With item vectors: the feature set the model trains on, chosen by measured accuracy."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("curation", "0009_suggestion_source"),
    ]

    operations = [
        migrations.AddField(
            model_name="projecttraining",
            name="feature_set",
            field=models.CharField(
                blank=True,
                default="",
                editable=False,
                help_text="With item vectors: the features the model trains on (builtin, vectors or both), the best by cross-validated accuracy at the last estimate; blank: both, until measured (`curation.feature_choice`).",
                max_length=16,
            ),
        ),
    ]

"""Whose guess the annotate page shows when our model and an imported prediction both have one."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("curation", "0008_dashboard"),
    ]

    operations = [
        migrations.AddField(
            model_name="projecttraining",
            name="suggestion_source",
            field=models.CharField(
                choices=[
                    ("model", "Our model, else an imported prediction"),
                    ("predictions", "An imported prediction, else our model"),
                    ("model_only", "Our model only"),
                ],
                default="model",
                help_text="Whose guess is shown when our model and an imported prediction both have one. Evaluation items never get either.",
                max_length=16,
            ),
        ),
    ]

"""Bulk actions on items: their records (`ItemAction`, `ItemRelabel`, `DeletedItem`), the answers an
item sent back for relabelling waits for (`Item.relabel_answers`, a database default so adding it
rewrites nothing), and review events without a person (an analysis flags items)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0008_browse_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="item",
            name="relabel_answers",
            field=models.SmallIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AlterField(
            model_name="reviewevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="review_events",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.CreateModel(
            name="ItemAction",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("review", "Sent to review"),
                            ("relabel", "Sent back for relabelling"),
                            ("assign", "Assigned to annotators"),
                            ("delete", "Deleted"),
                            ("export", "Exported"),
                        ],
                        max_length=10,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("item_count", models.PositiveIntegerField(default=0, help_text="Items selected.")),
                (
                    "done_count",
                    models.PositiveIntegerField(default=0, help_text="Items acted on so far."),
                ),
                ("params", models.JSONField(blank=True, default=dict)),
                (
                    "filter",
                    models.TextField(
                        blank=True,
                        help_text="The browser's querystring when the action took all matching items.",
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="item_actions",
                        to="annotations.project",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="DeletedItem",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("item_id", models.BigIntegerField()),
                ("external_id", models.CharField(max_length=255)),
                ("text", models.TextField(blank=True)),
                (
                    "image",
                    models.CharField(
                        blank=True, help_text="The stored file's name.", max_length=255
                    ),
                ),
                ("metadata", models.JSONField(blank=True, default=dict)),
                (
                    "gold",
                    models.JSONField(
                        blank=True, help_text="{labels, source} when it had one.", null=True
                    ),
                ),
                ("answers", models.PositiveIntegerField(default=0)),
                (
                    "action",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deleted",
                        to="annotations.itemaction",
                    ),
                ),
            ],
            options={
                "ordering": ["action", "item_id"],
            },
        ),
        migrations.CreateModel(
            name="ItemRelabel",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("previous", models.JSONField(default=list, help_text="Ids of the answers kept.")),
                (
                    "answers_wanted",
                    models.PositiveSmallIntegerField(help_text="New answers requested."),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "action",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="relabels",
                        to="annotations.itemaction",
                    ),
                ),
                (
                    "item",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="relabels",
                        to="annotations.item",
                    ),
                ),
                (
                    "requested_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.AddIndex(
            model_name="itemaction",
            index=models.Index(fields=["project", "-created_at"], name="itemaction_project_idx"),
        ),
        migrations.AddIndex(
            model_name="itemrelabel",
            index=models.Index(
                condition=models.Q(("completed_at__isnull", True)),
                fields=["item"],
                name="relabel_pending_idx",
            ),
        ),
    ]

"""What a team's own models say about the items: predictions (pre-annotations) and embeddings.

Both arrive from outside — with the items in an import, or posted later through the API — and
are kept apart from human answers: they are never an `Annotation`, never a gold label, and
exports and metrics list them separately. `annotations.preannotations` validates and writes them.
"""

from __future__ import annotations

from django.db import models


class PreAnnotation(models.Model):
    """One external model's prediction for one item. Posting again under the same model name
    replaces it, so a team can re-run its model without piling up rows."""

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="preannotations"
    )
    item = models.ForeignKey(
        "annotations.Item", on_delete=models.CASCADE, related_name="preannotations"
    )
    model_name = models.CharField(max_length=200)
    labels = models.JSONField(default=list, help_text="The predicted class names.")
    scores = models.JSONField(
        null=True,
        blank=True,
        help_text="Probability per class name, when the model gave them (all classes or some).",
    )
    score = models.FloatField(
        null=True, blank=True, help_text="The model's overall confidence in `labels`, 0–1."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "model_name"], name="preannotation_item_model_unique"
            ),
        ]
        indexes = [models.Index(fields=["project", "model_name"], name="preannotation_model_idx")]

    def __str__(self) -> str:
        return f"{self.model_name}: {self.labels} for item {self.item_id}"


class ItemVector(models.Model):
    """An item's embedding: `Project.vector_dim` little-endian float32 values. A table of its
    own so that items without vectors, and every query on items, pay nothing for them."""

    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, primary_key=True, related_name="vector"
    )
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    values = models.BinaryField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["project", "item"], name="itemvector_project_idx")]

    def __str__(self) -> str:
        return f"vector of item {self.item_id}"

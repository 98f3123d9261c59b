"""Records of the bulk actions on items (`annotations.bulk`): who did what to which items, when.

Imported by `annotations.models`, so these are models of the `annotations` app like the others.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ItemAction(models.Model):
    """One bulk action on a project's items: by whom, when, on how many, with what parameters,
    and on which selection (the browser's filter querystring for "all matching", else the ids
    picked, in `params["items"]`). Chunked actions count their progress in `done_count` and
    set `finished_at` once every chunk committed."""

    class Kind(models.TextChoices):
        REVIEW = "review", "Sent to review"
        RELABEL = "relabel", "Sent back for relabelling"
        ASSIGN = "assign", "Assigned to annotators"
        DELETE = "delete", "Deleted"
        EXPORT = "export", "Exported"

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="item_actions"
    )
    action = models.CharField(max_length=10, choices=Kind)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    item_count = models.PositiveIntegerField(default=0, help_text="Items selected.")
    done_count = models.PositiveIntegerField(default=0, help_text="Items acted on so far.")
    params = models.JSONField(default=dict, blank=True)
    filter = models.TextField(
        blank=True, help_text="The browser's querystring when the action took all matching items."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="itemaction_project_idx")]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.item_count} item(s) of {self.project_id}"


class ItemRelabel(models.Model):
    """An item sent back for relabelling: the answers it had then (`previous`, annotation ids)
    stay and are shown to the reviewer apart from the new ones. It ends (`completed_at`, with
    its `outcome`) when the new answers are in, whether a submission or a recount (a lowered
    overlap) completed the item, which then goes to review; or when a reviewer decides the
    item first, which then stops asking for them (`annotations.flags`). Deleting the item
    deletes it (the deletion's `DeletedItem` is the record)."""

    class Outcome(models.TextChoices):
        PENDING = "", "Waiting for the new answers"
        ANSWERED = "answered", "New answers in, sent to review"
        DECIDED = "decided", "Decided in review before the new answers came"

    action = models.ForeignKey(ItemAction, on_delete=models.CASCADE, related_name="relabels")
    item = models.ForeignKey("annotations.Item", on_delete=models.CASCADE, related_name="relabels")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    previous = models.JSONField(default=list, help_text="Ids of the answers kept.")
    answers_wanted = models.PositiveSmallIntegerField(help_text="New answers requested.")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # "Is this item waiting for relabelling", on the completing submission.
            models.Index(
                fields=["item"],
                condition=models.Q(completed_at__isnull=True),
                name="relabel_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"relabel of {self.item_id} ({'done' if self.completed_at else 'pending'})"


class DeletedItem(models.Model):
    """What a bulk deletion removed, kept so it is known afterwards what was deleted: the
    item's ids, content, metadata, gold label and answer count (the answers themselves go)."""

    action = models.ForeignKey(ItemAction, on_delete=models.CASCADE, related_name="deleted")
    item_id = models.BigIntegerField()
    external_id = models.CharField(max_length=255)
    text = models.TextField(blank=True)
    image = models.CharField(max_length=255, blank=True, help_text="The stored file's name.")
    metadata = models.JSONField(default=dict, blank=True)
    gold = models.JSONField(null=True, blank=True, help_text="{labels, source} when it had one.")
    answers = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["action", "item_id"]

    def __str__(self) -> str:
        return f"deleted {self.external_id}"

from __future__ import annotations

from django import forms


class LabelsField(forms.Field):
    """The chosen class names, as sent (a list of strings). Checked against the project's
    classes by the service, under its schema lock (`services.validate_labels`), not here: the
    page's submission then reads the class names once, not twice."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[str]:
        if not value:
            return []
        if not isinstance(value, list | tuple):
            raise forms.ValidationError("Labels must be a list of class names.")
        return [str(v) for v in value]


class SubmitForm(forms.Form):
    """One answer from the annotate page. `exclude` lists the items the page already holds,
    `want` how many new items to fetch ahead in the same round trip."""

    item = forms.IntegerField(min_value=1)
    labels = LabelsField(required=False)
    skipped = forms.BooleanField(required=False)
    time_spent_ms = forms.IntegerField(required=False, min_value=0)
    client_uuid = forms.UUIDField()
    exclude = forms.CharField(required=False)
    want = forms.IntegerField(required=False, min_value=0, max_value=5)

    def clean_exclude(self) -> frozenset[int]:
        return parse_ids(self.cleaned_data.get("exclude") or "")


class NextForm(forms.Form):
    exclude = forms.CharField(required=False)
    count = forms.IntegerField(required=False, min_value=1, max_value=5)

    def clean_exclude(self) -> frozenset[int]:
        return parse_ids(self.cleaned_data.get("exclude") or "")


def parse_ids(raw: str) -> frozenset[int]:
    ids = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or len(part) > 18:
            raise forms.ValidationError(f"{part!r} is not an item id.")
        ids.add(int(part))
    if len(ids) > 50:
        raise forms.ValidationError("Too many item ids.")
    return frozenset(ids)


class DecideForm(forms.Form):
    """A reviewer's decision on the item under review. `client_uuid` is rendered with the form,
    so a decision sent twice (a double Enter, a retry) is stored once."""

    labels = forms.MultipleChoiceField(required=False, choices=())
    comment = forms.CharField(required=False, max_length=2000, strip=True)
    client_uuid = forms.UUIDField()
    exclude = forms.CharField(required=False)

    def __init__(self, *args, label_names: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["labels"].choices = [(n, n) for n in label_names]

    def clean_exclude(self) -> frozenset[int]:
        return parse_ids(self.cleaned_data.get("exclude") or "")


class ReviewActionForm(forms.Form):
    """Skip or reopen: the review queue state the page carries, and an optional comment."""

    comment = forms.CharField(required=False, max_length=2000, strip=True)
    exclude = forms.CharField(required=False)

    def clean_exclude(self) -> frozenset[int]:
        return parse_ids(self.cleaned_data.get("exclude") or "")


class FlagForm(forms.Form):
    note = forms.CharField(required=False, max_length=2000, strip=True)

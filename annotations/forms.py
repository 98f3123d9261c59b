from __future__ import annotations

from django import forms


class SubmitForm(forms.Form):
    """One answer from the annotate page. `exclude` lists the items the page already holds,
    `want` how many new items to fetch ahead in the same round trip."""

    item = forms.IntegerField(min_value=1)
    labels = forms.MultipleChoiceField(required=False, choices=())
    skipped = forms.BooleanField(required=False)
    time_spent_ms = forms.IntegerField(required=False, min_value=0)
    client_uuid = forms.UUIDField()
    exclude = forms.CharField(required=False)
    want = forms.IntegerField(required=False, min_value=0, max_value=5)

    def __init__(self, *args, label_names: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["labels"].choices = [(n, n) for n in label_names]

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

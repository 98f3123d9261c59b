from __future__ import annotations

import re
import uuid

from django.urls import reverse

from annotations.models import Annotation


def test_annotator_labels_an_item_through_the_annotate_endpoints(client, project, annotator):
    client.force_login(annotator)
    page = client.get(reverse("annotate", args=[project.pk]))
    assert page.status_code == 200
    shown = [c["item"] for c in page.context["cards"]]
    assert len(shown) == 2
    response = client.post(
        reverse("annotate_submit", args=[project.pk]),
        {
            "item": shown[0].pk,
            "labels": ["negative"],
            "client_uuid": str(uuid.uuid4()),
            "exclude": str(shown[1].pk),
            "want": "1",
            "time_spent_ms": "1200",
        },
    )
    assert response.status_code == 200, response.content
    assert Annotation.objects.get().labels == ["negative"]
    html = response.content.decode()
    next_ids = [int(x) for x in re.findall(r'<article class="card" data-item-id="(\d+)"', html)]
    assert len(set(next_ids)) >= 1
    assert not set(next_ids) & {i.pk for i in shown}

"""The prediction endpoint as the worker calls it: a real model server on 127.0.0.1 gets the
items in batches, head of the queue first, with the auth header; a bad answer stores nothing
and says why; a timeout is retried after the backoff; a new model version is asked again; the
SSRF rules hold at save and at call; and the queue follows the endpoint's uncertainty."""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotations.imports import import_image_folder
from annotations.models import Item, PreAnnotation, PredictionEndpoint, Project
from annotations.prediction_endpoint import endpoint_save
from annotations.queue import next_items
from curation import jobs, trainer
from curation.endpoint_run import endpoint_due, endpoint_run
from curation.models import ProjectTraining
from curation.services import train_project_once
from tests.conftest import submit_handed_out
from tests.model_server import start_model_server

pytestmark = pytest.mark.usefixtures("fast_passwords")


@pytest.fixture
def allow_private(settings):
    """The model server is on 127.0.0.1: a site admin's setting allows it."""
    settings.WEBHOOKS_ALLOW_PRIVATE = True


@pytest.fixture
def model(allow_private):
    server = start_model_server()
    yield server
    server.stop()


def configure(project: Project, url: str, **extra) -> PredictionEndpoint:
    return endpoint_save(project=project, url=url, **extra)


def stored(project: Project) -> dict[str, PreAnnotation]:
    rows = PreAnnotation.objects.filter(project=project).select_related("item")
    return {p.item.external_id: p for p in rows}


def test_items_go_in_batches_head_of_the_queue_first(project, model):
    top = Item.objects.filter(project=project).order_by("id")[:3]
    for rank, item in enumerate(top):
        Item.objects.filter(pk=item.pk).update(priority=5.0 - rank)
    configure(project, model.url, batch_size=8)
    result = endpoint_run(project.pk)
    assert result.predicted == 20 and result.batches == 3 and result.error == ""
    assert [len(r.body["items"]) for r in model.requests] == [8, 8, 4]
    first = model.requests[0].body
    assert [i["id"] for i in first["items"][:3]] == [i.external_id for i in top]
    assert first["classes"] == ["positive", "negative", "neutral"]
    assert first["multi_label"] is False and first["project"] == "Sentiment"
    assert first["items"][0]["text"] == top[0].text
    predictions = stored(project)
    assert len(predictions) == 20
    one = predictions[top[0].external_id]
    assert one.model_name == "endpoint:v1" and one.labels == ["positive"]
    assert one.scores["positive"] == 0.9
    endpoint = PredictionEndpoint.objects.get(project=project)
    assert endpoint.items_predicted == 20 and endpoint.model_version == "v1"
    assert endpoint.last_success_at is not None and endpoint.last_error == ""
    # Nothing left to ask: the next run sends nothing.
    assert endpoint_run(project.pk).batches == 0 and len(model.requests) == 3


def test_a_run_stops_at_its_budget_and_the_next_goes_on(project, model):
    configure(project, model.url, batch_size=8)
    assert endpoint_run(project.pk, budget=10).predicted == 10
    assert [len(r.body["items"]) for r in model.requests] == [8, 2]
    assert endpoint_run(project.pk, budget=10).predicted == 10
    asked = [i["id"] for r in model.requests for i in r.body["items"]]
    assert len(asked) == len(set(asked)) == 20


def test_the_auth_header_is_sent(project, model):
    configure(project, model.url, auth_header="Bearer s3cret-token-value")
    endpoint_run(project.pk)
    assert model.requests[0].headers["Authorization"] == "Bearer s3cret-token-value"
    assert model.requests[0].headers["Content-Type"] == "application/json"


def _answer_with(entry_for):
    def answer(asked):
        return {
            "model_version": "v1",
            "predictions": [entry_for(i, item) for i, item in enumerate(asked["items"])],
        }

    return answer


GOOD = {"positive": 0.5, "negative": 0.3, "neutral": 0.2}
BAD_ANSWERS = {
    "an unknown id": (
        _answer_with(lambda i, item: {"id": "nope" if i == 3 else item["id"], "scores": GOOD}),
        "id 'nope' was not asked for",
    ),
    "an unknown class": (
        _answer_with(lambda i, item: {"id": item["id"], "scores": {"joy": 1.0}}),
        "'joy' is not a label class",
    ),
    "a probability above 1": (
        _answer_with(
            lambda i, item: {"id": item["id"], "scores": {"positive": 1.5, "negative": -0.5}}
        ),
        "the score of 'positive' is 1.5, not in [0, 1]",
    ),
    "a missing item": (
        lambda asked: {
            "model_version": "v1",
            "predictions": [{"id": it["id"], "scores": GOOD} for it in asked["items"][1:]],
        },
        "No prediction for",
    ),
    "scores that do not sum to 1": (
        _answer_with(lambda i, item: {"id": item["id"], "scores": {"positive": 0.4}}),
        "must sum to 1, not 0.4",
    ),
    "not JSON": (lambda asked: (200, b"<html>oops</html>", {}), "The answer is not JSON"),
    "an HTTP error": (lambda asked: (500, b"{}", {}), "HTTP 500"),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_a_bad_answer_stores_nothing_and_the_error_is_recorded(project, model, case):
    model.answer, expected = BAD_ANSWERS[case]
    configure(project, model.url, batch_size=5)
    result = endpoint_run(project.pk)
    assert result.predicted == 0 and len(model.requests) == 1  # the run stops at the failure
    assert PreAnnotation.objects.filter(project=project).count() == 0
    endpoint = PredictionEndpoint.objects.get(project=project)
    assert expected in endpoint.last_error
    assert endpoint.consecutive_failures == 1 and endpoint.next_attempt_at > timezone.now()
    assert endpoint.items_predicted == 0


def test_a_batch_refused_after_good_ones_keeps_the_good_ones(project, model):
    calls = []

    def second_is_bad(asked):
        calls.append(1)
        scores = GOOD if len(calls) == 1 else {"positive": 2.0}
        return {
            "model_version": "v1",
            "predictions": [{"id": it["id"], "scores": scores} for it in asked["items"]],
        }

    model.answer = second_is_bad
    configure(project, model.url, batch_size=5)
    result = endpoint_run(project.pk)
    assert result.predicted == 5 and "not in [0, 1]" in result.error
    assert PreAnnotation.objects.filter(project=project).count() == 5


def test_a_timeout_is_retried_after_the_backoff(project, model):
    model.delays = [3.0]
    configure(project, model.url, timeout_seconds=1)
    failed = endpoint_run(project.pk)
    assert failed.predicted == 0 and "Timed out after 1 s" in failed.error
    endpoint = PredictionEndpoint.objects.get(project=project)
    assert endpoint.next_attempt_at > timezone.now() + timedelta(seconds=20)
    # Backing off: neither the run nor the scheduler calls it yet.
    assert endpoint_run(project.pk).batches == 0 and len(model.requests) == 1
    assert jobs.ENDPOINT not in jobs.due_jobs(project.pk)
    later = endpoint.next_attempt_at + timedelta(seconds=1)
    retried = endpoint_run(project.pk, now=later)
    assert retried.predicted == 20 and len(model.requests) == 2
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0 and endpoint.next_attempt_at is None


def test_a_new_model_version_is_asked_for_every_item_again(project, model, settings):
    configure(project, model.url, batch_size=8)
    endpoint_run(project.pk)
    assert {p.model_name for p in stored(project).values()} == {"endpoint:v1"}
    model.version = "v2"
    assert endpoint_run(project.pk).batches == 0  # every item predicted: nothing to ask yet
    # The check for a new version falls due: the head is asked, the answer says v2, so every
    # v1 prediction is out of date and asked again.
    later = timezone.now() + timedelta(seconds=settings.ENDPOINT_CHECK_SECONDS + 1)
    assert not endpoint_due(project.pk) and endpoint_due(project.pk, now=later)
    asked_before = len(model.requests)
    result = endpoint_run(project.pk, now=later)
    assert result.predicted == 20 and len(model.requests) - asked_before == 3  # 8, 8, 4
    names = set(PreAnnotation.objects.filter(project=project).values_list("model_name", flat=True))
    assert names == {"endpoint:v2"}
    assert PreAnnotation.objects.filter(project=project).count() == 20
    assert PredictionEndpoint.objects.get(project=project).model_version == "v2"


def test_without_a_model_version_predictions_are_named_by_the_host(project, model):
    model.version = ""
    configure(project, model.url)
    endpoint_run(project.pk)
    assert {p.model_name for p in stored(project).values()} == {"endpoint:127.0.0.1"}


def png(size: int, *, noisy: bool = False) -> bytes:
    import random

    from PIL import Image

    image = Image.new("RGB", (size, size), (200, 30, 30))
    if noisy:  # incompressible: a large PNG
        rng = random.Random(1)
        image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size * size)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_images_are_sent_base64_and_big_ones_scaled_down(
    image_project, media_root, model, settings, tmp_path
):
    settings.ENDPOINT_IMAGE_MAX_BYTES = 20_000
    folder = tmp_path / "scans"
    folder.mkdir()
    small, big = png(8), png(200, noisy=True)
    assert len(big) > 20_000
    (folder / "small.png").write_bytes(small)
    (folder / "big.png").write_bytes(big)
    import_image_folder(project=image_project, path=folder)
    configure(image_project, model.url)
    endpoint_run(image_project.pk)
    entries = {e["id"]: e for e in model.requests[0].body["items"]}
    assert set(entries) == {"small.png", "big.png"}
    assert entries["small.png"]["format"] == "png"
    assert base64.b64decode(entries["small.png"]["image"]) == small
    scaled = base64.b64decode(entries["big.png"]["image"])
    assert entries["big.png"]["format"] == "png" and len(scaled) <= 20_000
    from PIL import Image

    with Image.open(io.BytesIO(scaled)) as image:
        assert image.size[0] < 200
    assert PreAnnotation.objects.filter(project=image_project).count() == 2


# --- SSRF ---------------------------------------------------------------------------------------


def test_a_loopback_url_is_refused_at_save_by_default(project):
    with pytest.raises(ValidationError) as refused:
        endpoint_save(project=project, url="http://127.0.0.1:9/predict")
    assert "127.0.0.1 is a loopback address" in str(refused.value.message_dict["url"])
    with pytest.raises(ValidationError, match="link-local"):
        endpoint_save(project=project, url="http://169.254.169.254/latest/")
    assert not PredictionEndpoint.objects.filter(project=project).exists()


def test_a_loopback_url_is_refused_at_call_when_the_setting_is_off(project, model, settings):
    configure(project, model.url)
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    result = endpoint_run(project.pk)
    assert model.requests == [] and result.predicted == 0
    assert "loopback" in PredictionEndpoint.objects.get(project=project).last_error


def test_a_redirect_to_an_internal_address_is_not_followed(project, settings):
    """The allowed server (127.0.0.2) redirects to one on 127.0.0.1, which is not allowed."""
    settings.WEBHOOKS_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    allowed, internal = start_model_server("127.0.0.2"), start_model_server("127.0.0.1")
    try:
        allowed.answer = lambda asked: (307, b"", {"Location": internal.url})
        configure(project, allowed.url)
        result = endpoint_run(project.pk)
        assert len(allowed.requests) == 1 and internal.requests == []
        assert "127.0.0.1 is a loopback address" in result.error
        assert PreAnnotation.objects.filter(project=project).count() == 0
    finally:
        allowed.stop()
        internal.stop()


# --- Ranking ------------------------------------------------------------------------------------

UNSURE = {"t5", "t12", "t17"}


def unsure_of_three(item: dict, classes: list[str]) -> dict[str, float]:
    if item["id"] in UNSURE:
        # t17 the least sure (margin 0.0), then t12, then t5.
        margin = {"t17": 0.0, "t12": 0.05, "t5": 0.1}[item["id"]]
        return {"positive": 0.45 + margin / 2, "negative": 0.45 - margin / 2, "neutral": 0.1}
    return confident(item, classes)


def confident(item: dict, classes: list[str]) -> dict[str, float]:
    return {"positive": 0.9, "negative": 0.05, "neutral": 0.05}


def no_exploration(project: Project) -> None:
    ProjectTraining.objects.update_or_create(
        project=project, defaults={"exploration": 0.0, "eval_share": 0.0}
    )


def served(project: Project, user, n: int) -> list[str]:
    return [i.external_id for i in next_items(project=project, user=user, count=n)]


def test_the_queue_serves_the_items_the_endpoint_is_least_sure_of_first(project, annotator, model):
    no_exploration(project)
    model.scores = unsure_of_three
    configure(project, model.url)
    result = endpoint_run(project.pk)
    assert result.ranked == 20
    assert served(project, annotator, 3) == ["t17", "t12", "t5"]


def test_our_model_trains_but_the_endpoint_keeps_ranking(project, annotator, reviewer, model):
    no_exploration(project)
    model.scores = unsure_of_three
    configure(project, model.url)
    endpoint_run(project.pk)
    # Labels for confident items (not the three), then a training run.
    for external_id, label in (("t0", "positive"), ("t1", "negative"), ("t2", "neutral")):
        item = Item.objects.get(project=project, external_id=external_id)
        submit_handed_out(item=item, annotator=annotator, labels=[label], client_uuid=uuid.uuid4())
    assert train_project_once(project) is not None  # our model trains
    assert served(project, reviewer, 3) == ["t17", "t12", "t5"]
    version = ProjectTraining.objects.get(project=project).current_version
    assert version is not None and version.labels_used == 3


def test_the_strategy_applies_to_the_endpoints_scores(project, annotator, model):
    """Least confidence and margin disagree here: a has top 0.5 (margin 0.0), b has top 0.4
    with a clear second (margin 0.1); least confidence puts b first, margin a."""
    no_exploration(project)
    ProjectTraining.objects.filter(project=project).update(strategy="least_confidence")
    probs = {
        "t3": {"positive": 0.5, "negative": 0.5, "neutral": 0.0},
        "t4": {"positive": 0.4, "negative": 0.3, "neutral": 0.3},
    }
    model.scores = lambda item, classes: probs.get(item["id"]) or confident(item, classes)
    configure(project, model.url)
    endpoint_run(project.pk)
    assert served(project, annotator, 2) == ["t4", "t3"]


# --- The worker ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_schedules_the_endpoint_while_items_lack_a_prediction(project, model):
    assert jobs.ENDPOINT not in jobs.due_jobs(project.pk)
    configure(project, model.url)
    assert jobs.ENDPOINT in jobs.due_jobs(project.pk)
    jobs.job_run({"type": jobs.ENDPOINT, "project_id": project.pk})
    assert PreAnnotation.objects.filter(project=project).count() == 20
    assert jobs.ENDPOINT not in jobs.due_jobs(project.pk)
    endpoint_save(project=project, url=model.url, enabled=False)
    Item.objects.create(project=project, external_id="new", text="a new review")
    assert jobs.ENDPOINT not in jobs.due_jobs(project.pk)


def test_the_request_body_is_what_the_docs_say(project, model):
    configure(project, model.url, batch_size=1)
    endpoint_run(project.pk, budget=1)
    body = model.requests[0].body
    assert set(body) == {"project", "classes", "multi_label", "items"}
    assert json.dumps(body["items"][0], sort_keys=True).startswith('{"id": ')


def test_the_example_server_in_the_docs_works(project, allow_private):
    """docs/prediction-endpoint.md's example server, run as written (on a free port)."""
    import re
    import threading
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("docs", "prediction-endpoint.md")
    blocks = re.findall(r"```python\n(.*?)```", text.read_text(), flags=re.S)
    (code,) = [b for b in blocks if "ThreadingHTTPServer" in b]
    code = code.replace('ThreadingHTTPServer(("0.0.0.0", 8500), Handler).serve_forever()', "")
    namespace: dict = {}
    exec(compile(code, "docs/prediction-endpoint.md", "exec"), namespace)  # noqa: S102
    server = namespace["ThreadingHTTPServer"](("127.0.0.1", 0), namespace["Handler"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/predict"
        endpoint_save(project=project, url=url, auth_header="Bearer wrong")
        assert "HTTP 401" in endpoint_run(project.pk).error
        endpoint_save(project=project, url=url, auth_header="Bearer s3cret")
        assert endpoint_run(project.pk).predicted == 20  # saving again ends the backoff
        one = PreAnnotation.objects.filter(project=project).first()
        assert one.model_name == "endpoint:uniform-1"
        assert one.scores == {"positive": 0.333333, "negative": 0.333333, "neutral": 0.333333}
    finally:
        server.shutdown()
        server.server_close()


def test_multi_label_scores_are_independent_and_rank_by_the_least_decided_class(
    db, annotator, model
):
    from annotations.models import Membership
    from annotations.services import project_create
    from tests.conftest import add_text_items

    project = project_create(name="Topics", classes=["sport", "music"], labeling_mode="multi")
    add_text_items(project, [f"text {i}" for i in range(6)])
    Membership.objects.create(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    no_exploration(project)
    scores = {"t4": {"sport": 0.95, "music": 0.5}}  # sure of sport, undecided on music
    model.scores = lambda item, classes: scores.get(item["id"], {"sport": 0.9, "music": 0.97})
    configure(project, model.url)
    endpoint_run(project.pk)
    assert model.requests[0].body["multi_label"] is True
    t4 = stored(project)["t4"]
    assert t4.labels == ["sport", "music"] and t4.scores == {"sport": 0.95, "music": 0.5}
    assert stored(project)["t0"].labels == ["sport", "music"]
    assert served(project, annotator, 1) == ["t4"]


def test_the_endpoints_guess_is_suggested_on_the_annotate_page_until_our_model_has_one(
    client, project, annotator, model, data_dir
):
    from django.urls import reverse

    from curation.suggest import suggestions_for

    configure(project, model.url)
    endpoint_run(project.pk)
    items = list(Item.objects.filter(project=project, needs_annotation=True)[:5])
    _, shown = suggestions_for(project, items)
    assert shown and all(s["model"] == "endpoint:v1" for s in shown.values())
    assert all(s["labels"] == ["positive"] for s in shown.values())
    client.force_login(annotator)
    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    assert "endpoint:v1: <b>positive</b> 90%" in page


def test_the_annotate_page_says_the_endpoint_ranks_the_queue(client, project, annotator, model):
    from django.urls import reverse

    configure(project, model.url)
    endpoint_run(project.pk)
    for external_id, name in (("t0", "positive"), ("t1", "negative")):
        item = Item.objects.get(project=project, external_id=external_id)
        submit_handed_out(item=item, annotator=annotator, labels=[name], client_uuid=uuid.uuid4())
    result = trainer.train(project.pk)
    assert result.announced["ranked_by"] == "endpoint"
    client.force_login(annotator)
    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    assert "The queue is ranked by your prediction endpoint" in page

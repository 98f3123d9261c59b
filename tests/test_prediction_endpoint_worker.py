"""The prediction endpoint inside the training worker, as embedded mode runs it (the in-memory
channel layer, the worker on the server's event loop): saving the endpoint wakes the worker,
which asks the model server on a consumer instance of its own and ranks the queue."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.db import connection
from django.utils import timezone

from annotations.models import Item, PreAnnotation, PredictionEndpoint
from annotations.prediction_endpoint import endpoint_save
from curation import jobs, worker
from curation.endpoint_run import endpoint_run
from dataprep_site.env import channel_layers_for
from tests.model_server import start_model_server

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords", "data_dir"),
]


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def model(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    server = start_model_server()
    yield server
    server.stop()


async def test_saving_the_endpoint_wakes_the_worker_which_predicts_and_ranks(
    settings, memory_layer, project, model
):
    import dataprep_site.asgi

    settings.TRAINING_SWEEP_SECONDS = 3600  # only the wake-up call may start the run
    running_worker = worker.TrainingWorker(
        dataprep_site.asgi.channel_application, [worker.TRAINING_CHANNEL], get_channel_layer()
    )
    running = asyncio.ensure_future(running_worker.arun())
    try:
        await asyncio.sleep(0.2)  # the start-up sweep finds nothing to do
        await database_sync_to_async(endpoint_save)(project=project, url=model.url, batch_size=7)
        count = database_sync_to_async(PreAnnotation.objects.filter(project=project).count)
        deadline = asyncio.get_running_loop().time() + 20
        while await count() < 20:
            assert asyncio.get_running_loop().time() < deadline, "no predictions arrived"
            await asyncio.sleep(0.05)
        assert [len(r.body["items"]) for r in model.requests] == [7, 7, 6]
        assert "endpoint" in running_worker.application_instances
        ranked = database_sync_to_async(
            Item.objects.filter(project=project, priority__gte=1.0).count
        )
        while await ranked() < 20:
            assert asyncio.get_running_loop().time() < deadline, "the queue was not ranked"
            await asyncio.sleep(0.05)
        endpoint = await database_sync_to_async(PredictionEndpoint.objects.get)(project=project)
        assert endpoint.items_predicted == 20
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await database_sync_to_async(jobs.wait_for_jobs)(10)


def test_two_runs_at_once_never_ask_for_the_same_items(project, model):
    """Two workers start a run together (the server holds each answer back): one takes the
    endpoint, the other finds it leased and does nothing."""
    endpoint_save(project=project, url=model.url, batch_size=10)
    model.delays = [0.5, 0.5]
    results = []

    def run() -> None:
        try:
            results.append(endpoint_run(project.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.predicted for r in results) == [0, 20]
    asked = [i["id"] for r in model.requests for i in r.body["items"]]
    assert len(asked) == len(set(asked)) == 20
    assert PredictionEndpoint.objects.get(project=project).leased_until is None
    # A run that died holding the lease: the next waits for its end, then goes.
    PredictionEndpoint.objects.update(leased_until=timezone.now() + timedelta(minutes=5))
    Item.objects.create(project=project, external_id="late", text="one more review")
    PredictionEndpoint.objects.update(caught_up_items=None)
    assert endpoint_run(project.pk).batches == 0
    assert endpoint_run(project.pk, now=timezone.now() + timedelta(minutes=6)).predicted == 1

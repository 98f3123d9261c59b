"""The training worker under a stream of labels: requests for a project that has one waiting are
merged into it, and a project that keeps receiving labels trains at most half the time, while a
lone label (or one annotator's next label) still trains at once."""

from __future__ import annotations

from channels.layers import InMemoryChannelLayer

from curation import worker
from curation.worker import TrainingPace


def test_a_request_for_a_project_with_one_waiting_is_merged_into_it():
    pace = TrainingPace()
    assert pace.admit(1)
    assert not pace.admit(1)
    assert not pace.admit(1)
    assert pace.admit(2)  # another project has its own
    pace.started(1)
    assert pace.admit(1)  # labels committed once the run began need a run of their own


def test_a_project_in_a_stream_of_labels_waits_as_long_as_its_last_run_took():
    pace = TrainingPace(share=0.5)
    pace.admit(7)
    pace.started(7)
    pace.admit(7)  # labels keep arriving while it trains
    pace.admit(7)
    pace.finished(7, 2.0, trained=True)
    assert 1.5 < pace.delay(7) <= 2.0


def test_a_label_after_a_quiet_spell_trains_at_once():
    pace = TrainingPace()
    pace.admit(7)
    pace.started(7)
    pace.finished(7, 2.0, trained=True)
    assert pace.delay(7) == 0.0
    # One annotator labelling at the model's pace: one request per run, never held back.
    pace.admit(7)
    pace.started(7)
    pace.finished(7, 2.0, trained=True)
    assert pace.delay(7) == 0.0


def test_a_run_with_nothing_to_learn_holds_nothing_back():
    pace = TrainingPace()
    pace.admit(7)
    pace.started(7)
    pace.admit(7)
    pace.admit(7)
    pace.finished(7, 2.0, trained=False)
    assert pace.delay(7) == 0.0


async def test_a_burst_of_requests_reaches_the_training_consumer_once(monkeypatch):
    """50 annotators' labels in a burst: one run for them, not one each (the run reads every
    label from the database when it starts)."""
    delivered: list[dict] = []

    class Inbox:
        def put_nowait(self, message: dict) -> None:
            delivered.append(message)

    monkeypatch.setattr(worker, "pace", TrainingPace())
    training_worker = worker.TrainingWorker(
        worker.training_application(), ["training"], InMemoryChannelLayer(), sweep_seconds=3600
    )
    monkeypatch.setattr(
        training_worker, "get_or_create_application_instance", lambda kind, scope: Inbox()
    )
    for _ in range(50):
        training_worker.dispatch({"type": "training.request", "project_id": 3})
    training_worker.dispatch({"type": "training.request", "project_id": 4})
    assert [m["project_id"] for m in delivered] == [3, 4]

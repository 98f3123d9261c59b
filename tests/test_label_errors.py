"""Likely label errors (`curation.label_errors`, `curation.label_issues`): injected noise is
found on real data, every gold label gets a score and a suggestion, flags go to review and a
reviewer's decision closes them, a dismissed flag is remembered for its gold label, runs are
due as the labels grow, and the command writes what it found."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from annotations.gold import gold_refresh
from annotations.label_classes import label_class_add
from annotations.models import Annotation, GoldLabel, Review
from annotations.review import review_decide
from benchmarks.label_errors import (
    build_project,
    digits_examples,
    flag_quality,
    inject_noise,
    label_items,
    tweets_examples,
)
from curation import jobs, label_errors
from curation.analysis_runs import last_done, run_request
from curation.label_issues import (
    label_errors_to_review,
    label_issue_dismiss,
)
from curation.models import AnalysisRun, LabelIssue, ProjectTraining
from tests.conftest import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("data_dir")]

KIND = AnalysisRun.Kind.LABEL_ERRORS
Status = LabelIssue.Status


@pytest.fixture(autouse=True)
def no_channel_layer(settings):
    settings.CHANNEL_LAYERS = {}


def run_now(project) -> AnalysisRun:
    """Ask for a run and let the worker's job take it, as the training worker does."""
    run = run_request(project=project, kind=KIND)
    jobs.job_run({"type": jobs.ANALYSIS, "project_id": project.pk})
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.DONE, run.error
    return run


@pytest.fixture
def tweets():
    """300 demo tweets with their crowd labels, 10% of them changed to another class."""
    split = tweets_examples(300)
    project, truth = build_project(split, "Tweets")
    noisy, flipped = inject_noise(truth, split.classes, 0.1, seed=1)
    label_items(project, noisy)
    project.flipped = flipped
    return project


def relabel(item_id: int, label: str) -> None:
    """The item's one answer changed to `label`, and its gold label with it."""
    annotation = Annotation.objects.get(item_id=item_id)
    annotation.labels = [label]
    annotation.save(update_fields=["labels", "updated_at"])
    gold_refresh(annotation.project, [item_id])


def test_injected_label_noise_in_digits_is_found_with_precision_and_recall_of_at_least_0_7():
    split = digits_examples()
    project, truth = build_project(split, "Digits")
    noisy, flipped = inject_noise(truth, split.classes, 0.1, seed=0)
    label_items(project, noisy)

    run = run_now(project)

    quality = flag_quality(project, flipped)
    assert quality["precision"] >= 0.7, quality
    assert quality["recall"] >= 0.7, quality
    assert run.result["flagged"] == quality["flagged"]
    assert run.basis == len(truth)


def test_every_gold_label_gets_a_score_a_suggestion_and_out_of_sample_probabilities(tweets):
    run = run_now(tweets)
    rows = list(LabelIssue.objects.filter(project=tweets))
    assert len(rows) == GoldLabel.objects.filter(project=tweets).count() == 300
    for row in rows:
        assert 0.0 <= row.score <= 1.0
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        assert row.suggested == max(row.probabilities, key=row.probabilities.get)
        assert row.run_id == run.pk
    flagged = [r for r in rows if r.status == Status.FLAGGED]
    assert flagged and len(flagged) == run.result["flagged"]
    # Flags are the likely wrong ones: most of them are injected errors.
    assert len({r.item_id for r in flagged} & tweets.flipped) / len(flagged) >= 0.5
    assert run.message.startswith(f"{len(flagged)} likely label errors among 300 gold labels")


def test_too_few_labels_per_class_finishes_with_a_clear_summary():
    split = tweets_examples(40)
    project, truth = build_project(split, "Few")
    ids = sorted(truth)
    label_items(
        project, dict.fromkeys(ids[:30], "negative") | dict.fromkeys(ids[30:33], "positive")
    )
    run = run_now(project)
    assert run.message.startswith("Needs at least 5 labels per class in two classes")
    assert "positive 3" in run.message
    assert not LabelIssue.objects.filter(project=project).exists()


def test_a_rare_class_is_left_out_and_the_summary_says_so(tweets):
    rare = sorted(tweets.flipped)[:2]
    label_class_add(project=tweets, name="mixed")
    for item_id in rare:
        relabel(item_id, "mixed")
    run = run_now(tweets)
    assert "left out, too few labels: mixed 2" in run.message
    assert run.result["left_out"] == 2
    assert not LabelIssue.objects.filter(item_id__in=rare).exists()
    suggested = set(LabelIssue.objects.values_list("suggested", flat=True))
    assert suggested <= {"negative", "neutral", "positive"}


def test_a_multi_label_project_is_left_out_with_a_clear_summary():
    split = tweets_examples(60)
    project, truth = build_project(split, "Multi")
    project.labeling_mode = "multi"
    project.save(update_fields=["labeling_mode"])
    label_items(project, truth)
    assert not label_errors.is_due(project, None)
    run = run_now(project)
    assert "single-label projects only" in run.message
    assert not LabelIssue.objects.filter(project=project).exists()


def test_a_dismissed_flag_is_not_raised_again_for_the_same_gold_but_is_when_the_gold_changes(
    tweets,
):
    admin = make_user("boss")
    run_now(tweets)
    issue = LabelIssue.objects.filter(project=tweets, status=Status.FLAGGED).order_by("-score")[0]
    item = issue.item
    label_issue_dismiss(item=item, user=admin)

    run_now(tweets)
    issue.refresh_from_db()
    assert issue.status == Status.DISMISSED and issue.closed_by == admin
    assert issue.gold == GoldLabel.objects.get(item=item).labels

    other = next(c for c in ("negative", "neutral", "positive") if [c] != issue.gold)
    relabel(item.pk, other)
    run_now(tweets)
    issue.refresh_from_db()
    assert issue.gold == [other]
    assert issue.status in (Status.FLAGGED, Status.NONE)
    assert issue.closed_by is None


def test_the_top_n_flags_go_to_review_with_the_label_error_reason(tweets):
    admin = make_user("boss")
    run_now(tweets)
    ranked = list(
        LabelIssue.objects.filter(project=tweets, status=Status.FLAGGED)
        .order_by("-score", "item_id")
        .values_list("item_id", flat=True)
    )
    sent = label_errors_to_review(project=tweets, user=admin, limit=3)
    assert sent == ranked[:3]
    for review in Review.objects.filter(item_id__in=sent):
        assert review.status == Review.Status.OPEN
        assert Review.Reason.LABEL_ERROR in review.reasons
        assert "the model suggests" in review.flag_note
    assert set(
        LabelIssue.objects.filter(status=Status.IN_REVIEW).values_list("item_id", flat=True)
    ) == set(sent)
    assert label_errors_to_review(project=tweets, user=admin, limit=2) == ranked[3:5]
    with pytest.raises(ValueError, match="limit must be between 1 and"):
        label_errors_to_review(project=tweets, user=admin, limit=0)


def test_a_review_decision_closes_the_flag_as_fixed_or_as_label_is_right(tweets):
    admin, reviewer = make_user("boss"), make_user("rev")
    run_now(tweets)
    fixed_id, kept_id = label_errors_to_review(project=tweets, user=admin, limit=2)
    fixed, kept = LabelIssue.objects.get(pk=fixed_id), LabelIssue.objects.get(pk=kept_id)
    for issue, labels in ((fixed, [fixed.suggested]), (kept, kept.gold)):
        review = Review.objects.get(item_id=issue.item_id)
        review_decide(project=tweets, review_id=review.pk, reviewer=reviewer, labels=labels)
    fixed.refresh_from_db()
    kept.refresh_from_db()
    assert fixed.status == Status.FIXED and fixed.gold == [fixed.suggested]
    assert kept.status == Status.DISMISSED and kept.closed_by == reviewer
    assert GoldLabel.objects.get(item_id=fixed_id).labels == [fixed.suggested]

    run_now(tweets)  # both gold labels are the decided ones: neither is raised again
    assert LabelIssue.objects.get(pk=fixed_id).status == Status.FIXED
    assert LabelIssue.objects.get(pk=kept_id).status == Status.DISMISSED


def test_label_errors_are_due_as_the_gold_labels_grow_by_the_configured_share():
    split = tweets_examples(80)
    project, truth = build_project(split, "Growing")
    ids = sorted(truth)
    label_items(project, {i: truth[i] for i in ids[:29]})
    assert not label_errors.is_due(project, None)
    label_items(project, {ids[29]: truth[ids[29]]}, username="second")
    assert label_errors.is_due(project, None)
    assert KIND in jobs.analyses_due(project)

    jobs.job_run({"type": jobs.ANALYSIS, "project_id": project.pk})
    run = last_done(project, KIND)
    assert run is not None and run.basis == 30 and run.requested_by is None
    assert not label_errors.is_due(project, run)
    ProjectTraining.objects.update_or_create(project=project, defaults={"analysis_growth": 0.5})
    label_items(project, {i: truth[i] for i in ids[30:44]}, username="third")
    assert not label_errors.is_due(project, run)  # 44 < 30 × 1.5
    label_items(project, {ids[44]: truth[ids[44]]}, username="fourth")
    assert label_errors.is_due(project, run)


def test_find_label_errors_writes_one_json_line_per_flagged_item(tweets, tmp_path, capsys):
    output = tmp_path / "errors.jsonl"
    call_command("find_label_errors", "Tweets", "--output", str(output), "--no-progress")
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    flagged = LabelIssue.objects.filter(project=tweets, status=Status.FLAGGED)
    assert len(lines) == flagged.count() > 0
    assert set(lines[0]) == {"external_id", "score", "suggested_label", "gold"}
    assert [line["score"] for line in lines] == sorted(
        (line["score"] for line in lines), reverse=True
    )
    top = flagged.order_by("-score", "item_id").select_related("item")[0]
    assert lines[0] == {
        "external_id": top.item.external_id,
        "score": round(top.score, 4),
        "suggested_label": top.suggested,
        "gold": top.gold,
    }
    assert f"Wrote {len(lines)} lines" in capsys.readouterr().out

    call_command("find_label_errors", str(tweets.pk), "--output", str(output), "--limit", "2",
                 "--no-progress")  # fmt: skip
    assert len(output.read_text().splitlines()) == 2


def test_find_label_errors_refuses_an_unknown_project(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No project with id or name 'nope'"):
        call_command("find_label_errors", "nope", "--output", str(tmp_path / "x.jsonl"))


def test_large_projects_use_three_saga_folds_and_still_find_the_noise(tweets, monkeypatch):
    monkeypatch.setattr(label_errors, "LARGE", 100)  # 300 labels count as large here
    run = run_now(tweets)
    assert run.result["solver"] == "saga" and run.result["folds"] == label_errors.LARGE_FOLDS
    assert LabelIssue.objects.filter(project=tweets).count() == 300
    quality = flag_quality(tweets, tweets.flipped)
    assert quality["flagged"] and quality["precision"] >= 0.4, quality
    assert set(run.result["cpu_s"]) == {"gold and features", "folds", "cleanlab", "write"}

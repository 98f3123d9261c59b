"""The project dashboard for reviewers and project admins: progress and the queue, throughput per
annotator, the model's accuracy against the labels, gold labels and agreement over time, open
reviews, likely label errors, duplicates and the dataset versions.

A page view must not count a million answers, so the numbers are kept by the training worker
(`dashboard_refresh`, a follow-up job in `curation.jobs`): answers per annotator and hour
(`AnnotatorHour`, recounted only for the hours since the last refresh), one row of the
project's counts per hour (`ProjectStatsPoint`) and the plots, rendered once to SVG
(`DashboardState`). `dashboard_data` reads those rows and a few small tables (model and
dataset versions), for the page and the API alike. The web processes import this module, so it
imports no numerical library; `curation.dashboard_plots` (matplotlib) is the worker's.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, ExpressionWrapper, F, IntegerField, Max, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from annotations.models import Annotation, GoldLabel, GoldSource, Item, Project, Review
from curation.dashboard_models import AnnotatorHour, DashboardState, ProjectStatsPoint
from curation.dataset_models import DuplicateGroup, LabelIssue
from curation.models import STRATEGY_CHOICES, ModelVersion, ProjectTraining
from curation.strategy_names import DEFAULT_STRATEGY
from curation.version_listing import versions_listed
from curation.version_models import DatasetVersion

logger = logging.getLogger(__name__)

__all__ = [
    "OTHERS",
    "PLOTS",
    "PLOT_SERIES",
    "annotator_progress",
    "dashboard_data",
    "dashboard_due",
    "dashboard_refresh",
    "hour_of",
    "projects_dashboard_due",
]

HOUR = timedelta(hours=1)
#: Throughput hour by hour over the last two days, and day by day over the last two weeks.
HOURS_SHOWN = 48
DAYS_SHOWN = 14
#: The pace behind the time to finish: answers per hour, over the hours of the last day that had
#: any (a night without labelling does not slow the estimate down).
PACE_HOURS = 24
#: Points of the last two days stay hour by hour; older ones are thinned to one a day.
HOURLY_POINTS_KEPT = timedelta(hours=48)
#: An answer is stamped when its row is inserted and seen when its transaction commits; the due
#: check counts the answers stamped since this long before the last refresh, so one that
#: committed after the refresh had read is noticed too.
LATE_COMMIT = timedelta(minutes=5)
#: Annotators drawn (and tabled) one by one in the throughput plots, most active first; the
#: others share one series.
PLOT_SERIES = 9
OTHERS = "other annotators"
#: The plots, in the order the page shows them.
PLOTS = (
    "progress",
    "throughput_hourly",
    "throughput_daily",
    "model",
    "gold_balance",
    "agreement",
    "versions",
)


def hour_of(moment: datetime) -> datetime:
    """The start of `moment`'s hour, in UTC."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# -- the worker's refresh ----------------------------------------------------------------------


def dashboard_refresh(project: Project) -> DashboardState:
    """Bring `project`'s dashboard rows up to date, then render its plots (matplotlib).

    Answers per annotator and hour are recounted from the hour before the last refresh's (an
    answer stamped then may have committed after that refresh read); the first refresh counts
    the whole history once. The state row is locked meanwhile, so two workers never rewrite the
    same hours at once. Plots are rendered after the counts commit, outside the transaction."""
    from curation import trainer  # the worker's module: the web processes never get here

    trainer.wait_while_training()
    started = time.perf_counter()
    with transaction.atomic():
        DashboardState.objects.get_or_create(project=project)
        state = DashboardState.objects.select_for_update().get(project=project)
        now = timezone.now()
        since = None if state.refreshed_at is None else hour_of(state.refreshed_at) - HOUR
        # Read before the counts: whatever commits later shows as a change at the next check.
        fingerprint = _fingerprint(project, now - LATE_COMMIT)
        _hours_recount(project, since)
        point = _point_write(project, now)
        _points_thin(project, now)
        state.refreshed_at = now
        state.answers_seen = point.answers
        state.summary = {
            "fingerprint": fingerprint,
            "recounted_from": since.isoformat() if since else None,
            "count_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        state.save(update_fields=["refreshed_at", "answers_seen", "summary"])
    _plots_render(project, state)
    return state


def _plots_render(project: Project, state: DashboardState) -> None:
    """Render the plots from the numbers the page shows and store them with the state, unless
    a newer refresh has replaced the state meanwhile."""
    from curation import dashboard_plots, trainer

    began = time.perf_counter()
    payload = _payload(project, as_of=state.refreshed_at, summary=state.summary)
    trainer.wait_while_training()
    plots = dashboard_plots.plots_render(payload)
    summary = {
        **state.summary,
        "plots": list(plots),
        "render_ms": round((time.perf_counter() - began) * 1000, 1),
    }
    DashboardState.objects.filter(pk=state.pk, refreshed_at=state.refreshed_at).update(
        plots=plots, summary=summary
    )
    state.plots, state.summary = plots, summary


def _hours_recount(project: Project, since: datetime | None) -> None:
    """Rewrite the `AnnotatorHour` rows of the hours from `since` on (all when None) from the
    answers, by the hour each was first given. A range scan of annotation_created_idx."""
    answers = Annotation.objects.filter(project=project)
    stale = AnnotatorHour.objects.filter(project=project)
    if since is not None:
        answers = answers.filter(created_at__gte=since)
        stale = stale.filter(hour__gte=since)
    counted = (
        answers.order_by()
        .annotate(bucket=TruncHour("created_at", tzinfo=UTC))
        .values("annotator_id", "bucket")
        .annotate(
            answered=Count("id", filter=Q(skipped=False)),
            skipped=Count("id", filter=Q(skipped=True)),
        )
    )
    rows = [
        AnnotatorHour(
            project=project,
            annotator_id=row["annotator_id"],
            hour=row["bucket"],
            answers=row["answered"],
            skips=row["skipped"],
        )
        for row in counted
    ]
    stale.delete()
    AnnotatorHour.objects.bulk_create(rows, batch_size=1000)


def _point_write(project: Project, now: datetime) -> ProjectStatsPoint:
    """Count the project as it is now into the point of the current hour."""
    counters = Project.objects.filter(pk=project.pk).values(
        "item_count", "complete_count", "overlap"
    )[0]
    wanted = ExpressionWrapper(
        Coalesce(F("required_answers"), Value(counters["overlap"]))
        + F("relabel_answers")
        - F("annotation_count"),
        output_field=IntegerField(),
    )
    unfinished = Item.objects.filter(project=project, needs_annotation=True).aggregate(
        in_progress=Count("id", filter=Q(annotation_count__gt=0)), remaining=Sum(wanted)
    )
    in_progress = unfinished["in_progress"]
    gold_counts, agreement = _gold_now(project)
    point, _ = ProjectStatsPoint.objects.update_or_create(
        project=project,
        at=hour_of(now),
        defaults={
            "measured_at": now,
            "items": counters["item_count"],
            "complete": counters["complete_count"],
            "in_progress": in_progress,
            "open": max(0, counters["item_count"] - counters["complete_count"] - in_progress),
            "answers": Annotation.objects.filter(project=project).count(),
            "answers_remaining": max(0, unfinished["remaining"] or 0),
            "gold_counts": gold_counts,
            "agreement_mean": agreement,
            "open_reviews": _open_reviews(project),
            "label_errors": LabelIssue.objects.filter(
                project=project, status=LabelIssue.Status.FLAGGED
            ).count(),
            "duplicate_groups": DuplicateGroup.objects.filter(project=project).count(),
        },
    )
    return point


def _gold_now(project: Project) -> tuple[dict[str, int], float | None]:
    """Final gold labels per class (those a dataset version counts: of complete items, or
    decided by a reviewer; `curation.dataset_versions.final_gold_count`) and the mean agreement
    of the complete items' gold rows, in one grouped pass over the gold labels."""
    groups = (
        GoldLabel.objects.filter(project=project)
        .order_by()
        .values("labels", "source", "item__needs_annotation")
        .annotate(n=Count("pk"), agreement_sum=Sum("agreement"), agreement_n=Count("agreement"))
    )
    counts: dict[str, int] = {}
    total, measured = 0.0, 0
    for group in groups:
        complete = not group["item__needs_annotation"]
        if group["labels"] and (complete or group["source"] == GoldSource.ADJUDICATED):
            for name in group["labels"]:
                counts[name] = counts.get(name, 0) + group["n"]
        if complete and group["agreement_n"]:
            total += group["agreement_sum"]
            measured += group["agreement_n"]
    return counts, (total / measured if measured else None)


def _points_thin(project: Project, now: datetime) -> None:
    """Keep the points of the last two days hour by hour and one a day (its last) before."""
    old = list(
        ProjectStatsPoint.objects.filter(project=project, at__lt=hour_of(now) - HOURLY_POINTS_KEPT)
        .order_by("at")
        .values_list("pk", "at")
    )
    last_of_day = {at.astimezone(UTC).date(): pk for pk, at in old}
    kept = set(last_of_day.values())
    ProjectStatsPoint.objects.filter(pk__in=[pk for pk, _ in old if pk not in kept]).delete()


def _open_reviews(project: Project) -> int:
    return Review.objects.filter(project=project, status=Review.Status.OPEN).count()


# -- when a refresh is due ---------------------------------------------------------------------


def _fingerprint(project: Project, since: datetime) -> dict[str, Any]:
    """What changes when the dashboard's numbers do, from index probes and counters only:
    answers stamped since `since` (new answers, and late commits), gold labels changed since
    then and the newest change (an item's gold label changing twice), the project's counters,
    open reviews, flagged label errors, duplicate groups and dataset versions."""
    gold = GoldLabel.objects.filter(project=project)
    counters = Project.objects.filter(pk=project.pk).values("item_count", "complete_count")[0]
    newest_gold = gold.aggregate(m=Max("updated_at"))["m"]
    versions = DatasetVersion.objects.filter(project=project).aggregate(
        n=Count("pk"),
        measured=Count("pk", filter=~Q(metrics_status=DatasetVersion.Metrics.PENDING)),
    )
    values = {
        "answers_recent": Annotation.objects.filter(project=project, created_at__gte=since).count(),
        "gold_recent": gold.filter(updated_at__gte=since).count(),
        "gold_newest": newest_gold.isoformat() if newest_gold else None,
        "items": counters["item_count"],
        "complete": counters["complete_count"],
        "open_reviews": _open_reviews(project),
        "label_errors": LabelIssue.objects.filter(
            project=project, status=LabelIssue.Status.FLAGGED
        ).count(),
        "duplicate_groups": DuplicateGroup.objects.filter(project=project).count(),
        "versions": [versions["n"], versions["measured"]],
    }
    return {"since": since.isoformat(), "values": values}


def dashboard_due(project: Project) -> bool:
    """True when `project` has no dashboard yet, or its last refresh is older than
    DASHBOARD_REFRESH_SECONDS and something it counts changed since."""
    state = DashboardState.objects.filter(project=project).values("refreshed_at", "summary").first()
    if state is None or state["refreshed_at"] is None:
        return True
    age = timezone.now() - state["refreshed_at"]
    if age < timedelta(seconds=settings.DASHBOARD_REFRESH_SECONDS):
        return False
    stored = (state["summary"] or {}).get("fingerprint") or {}
    if "since" not in stored:
        return True
    since = datetime.fromisoformat(stored["since"])
    return _fingerprint(project, since)["values"] != stored.get("values")


def projects_dashboard_due() -> list[int]:
    """Projects whose dashboard is due (for the worker's sweep): those without one, and those
    refreshed longer than DASHBOARD_REFRESH_SECONDS ago whose numbers changed since."""
    cutoff = timezone.now() - timedelta(seconds=settings.DASHBOARD_REFRESH_SECONDS)
    candidates = (
        Project.objects.filter(
            Q(dashboard__isnull=True)
            | Q(dashboard__refreshed_at__isnull=True)
            | Q(dashboard__refreshed_at__lt=cutoff)
        )
        .order_by("pk")
        .only("pk")
    )
    return [project.pk for project in candidates if dashboard_due(project)]


# -- what the page and the API show ------------------------------------------------------------


def dashboard_data(project: Project) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready values (ISO datetimes): the numbers of the
    last refresh (`refreshed_at`; None before the first, with `ready` False), the model and
    dataset versions as they are now, and the names of the plots rendered."""
    state = (
        DashboardState.objects.filter(project=project).values("refreshed_at", "summary").first()
        or {}
    )
    payload = _payload(project, as_of=state.get("refreshed_at"), summary=state.get("summary"))
    return _jsonable(payload)


def _payload(
    project: Project, *, as_of: datetime | None, summary: dict[str, Any] | None
) -> dict[str, Any]:
    now = timezone.now()
    anchor = hour_of(as_of or now)
    points = list(ProjectStatsPoint.objects.filter(project=project).order_by("at"))
    latest = points[-1] if points else None
    hourly = list(
        AnnotatorHour.objects.filter(
            project=project, hour__gt=anchor - HOURS_SHOWN * HOUR, hour__lte=anchor
        )
        .order_by("hour", "annotator_id")
        .values("hour", "annotator_id", "answers", "skips")
    )
    first_day = datetime.combine(
        anchor.date() - timedelta(days=DAYS_SHOWN - 1), datetime.min.time(), tzinfo=UTC
    )
    daily = list(
        AnnotatorHour.objects.filter(project=project, hour__gte=first_day, hour__lte=anchor)
        .order_by()
        .annotate(day=TruncDay("hour", tzinfo=UTC))
        .values("day", "annotator_id")
        .annotate(answered=Sum("answers"), skipped=Sum("skips"))
        .order_by("day", "annotator_id")
    )
    return {
        "project_id": project.pk,
        "ready": as_of is not None,
        "refreshed_at": as_of,
        "progress": _progress(project, points),
        "eta": _eta(latest, hourly, anchor, as_of),
        "throughput": _throughput(hourly, daily),
        "model": _model(project, now),
        "gold": _gold_series(project, points),
        "agreement": [
            {"at": p.at, "measured_at": p.measured_at, "mean": p.agreement_mean} for p in points
        ],
        "reviews": {"open": _open_reviews(project)},
        "label_errors": latest.label_errors if latest else 0,
        "duplicate_groups": latest.duplicate_groups if latest else 0,
        "versions": versions_listed(project),
        "plots": list((summary or {}).get("plots", [])),
    }


def _progress(project: Project, points: list[ProjectStatsPoint]) -> dict[str, Any]:
    """Done / in progress / open as of the last refresh (before it, the live counters, with the
    split of the unfinished items unknown), and the same over time."""
    latest = points[-1] if points else None
    if latest is None:
        return {
            "items": project.item_count,
            "complete": project.complete_count,
            "in_progress": None,
            "open": None,
            "answers": None,
            "answers_remaining": None,
            "over_time": [],
        }
    return {
        "items": latest.items,
        "complete": latest.complete,
        "in_progress": latest.in_progress,
        "open": latest.open,
        "answers": latest.answers,
        "answers_remaining": latest.answers_remaining,
        "over_time": [
            {
                "at": p.at,
                "measured_at": p.measured_at,
                "complete": p.complete,
                "in_progress": p.in_progress,
                "open": p.open,
            }
            for p in points
        ],
    }


def _eta(
    latest: ProjectStatsPoint | None,
    hourly: list[dict[str, Any]],
    anchor: datetime,
    as_of: datetime | None,
) -> dict[str, Any]:
    """The time to finish at the current pace: answers still needed ÷ answers per hour over the
    hours of the last PACE_HOURS (ending with the refresh's hour) that had any answer."""
    per_hour: dict[datetime, int] = {}
    for row in hourly:
        if row["hour"] > anchor - PACE_HOURS * HOUR:
            per_hour[row["hour"]] = per_hour.get(row["hour"], 0) + row["answers"]
    active = [n for n in per_hour.values() if n > 0]
    pace = sum(active) / len(active) if active else None
    remaining = latest.answers_remaining if latest else None
    eta: dict[str, Any] = {
        "answers_remaining": remaining,
        "pace_per_hour": pace,
        "active_hours": len(active),
        "hours": None,
        "finish_at": None,
        "state": "unknown",
    }
    if latest is not None and not latest.items:
        eta["state"] = "empty"
    elif remaining == 0 and latest is not None:
        eta.update(hours=0.0, finish_at=as_of, state="done")
    elif remaining and pace:
        hours = remaining / pace
        eta.update(hours=hours, finish_at=as_of + timedelta(hours=hours), state="estimated")
    return eta


def _throughput(hourly: list[dict[str, Any]], daily: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers and skips per annotator and hour (last HOURS_SHOWN) and day (last DAYS_SHOWN),
    and each annotator's totals and mean per active hour and day; annotators most active
    first."""
    ids = {row["annotator_id"] for row in hourly} | {row["annotator_id"] for row in daily}
    users = get_user_model().objects.filter(pk__in=ids)
    names = dict(users.values_list("pk", get_user_model().USERNAME_FIELD))
    people: dict[int, dict[str, Any]] = {
        pk: {
            "id": pk,
            "username": names.get(pk, f"#{pk}"),
            "answers_hours": 0,
            "skips_hours": 0,
            "active_hours": 0,
            "answers_days": 0,
            "skips_days": 0,
            "active_days": 0,
        }
        for pk in ids
    }
    for row in hourly:
        person = people[row["annotator_id"]]
        person["answers_hours"] += row["answers"]
        person["skips_hours"] += row["skips"]
        person["active_hours"] += row["answers"] > 0
    for row in daily:
        person = people[row["annotator_id"]]
        person["answers_days"] += row["answered"]
        person["skips_days"] += row["skipped"]
        person["active_days"] += row["answered"] > 0
    for person in people.values():
        hours, days = person["active_hours"], person["active_days"]
        person["per_hour"] = person["answers_hours"] / hours if hours else None
        person["per_day"] = person["answers_days"] / days if days else None
    order = sorted(people.values(), key=lambda p: (-p["answers_days"], p["username"]))
    return {
        "hours_shown": HOURS_SHOWN,
        "days_shown": DAYS_SHOWN,
        "annotators": order,
        "hourly": [
            {
                "hour": row["hour"],
                "annotator": people[row["annotator_id"]]["username"],
                "answers": row["answers"],
                "skips": row["skips"],
            }
            for row in hourly
        ],
        "daily": [
            {
                "day": row["day"].date(),
                "annotator": people[row["annotator_id"]]["username"],
                "answers": row["answered"],
                "skips": row["skipped"],
            }
            for row in daily
        ],
    }


def _model(project: Project, now: datetime) -> dict[str, Any]:
    """The active strategy, the current version and its age, and the accuracy on the random
    evaluation slice against the labels: one point per kept version whose slice had grown
    (versions are pruned, milestones kept: `curation.versions`)."""
    training = (
        ProjectTraining.objects.filter(project=project).select_related("current_version").first()
    )
    strategy = training.strategy if training else DEFAULT_STRATEGY
    current = training.current_version if training else None
    trained_at = training.trained_at if training else None
    curve, seen = [], 0
    rows = (
        ModelVersion.objects.filter(project=project)
        .order_by("version")
        .values("version", "labels_used", "trained_at", "metrics__eval")
    )
    for row in rows:
        evaluation = row["metrics__eval"] or {}
        total = evaluation.get("total") or 0
        if total <= seen or evaluation.get("accuracy") is None:
            continue
        seen = total
        curve.append(
            {
                "version": row["version"],
                "labels": row["labels_used"],
                "total": total,
                "correct": evaluation.get("correct"),
                "accuracy": evaluation["accuracy"],
                "low": evaluation.get("low"),
                "high": evaluation.get("high"),
                "trained_at": row["trained_at"],
            }
        )
    return {
        "strategy": strategy,
        "strategy_name": dict(STRATEGY_CHOICES).get(strategy, strategy),
        "version": current.version if current else None,
        "labels_used": current.labels_used if current else None,
        "trained_at": trained_at,
        "age_seconds": round((now - trained_at).total_seconds()) if trained_at else None,
        "curve": curve,
    }


def _gold_series(project: Project, points: list[ProjectStatsPoint]) -> dict[str, Any]:
    """The classes (schema order, then any name only older points have) with their colours, and
    the final gold labels per class at each point."""
    colours = dict(project.label_classes.order_by("order", "id").values_list("name", "color"))
    names = list(colours)
    for point in points:
        names += [name for name in point.gold_counts if name not in names]
    return {
        "classes": [{"name": name, "color": colours.get(name)} for name in names],
        "over_time": [
            {
                "at": p.at,
                "measured_at": p.measured_at,
                "counts": {name: p.gold_counts.get(name, 0) for name in names},
                "total": sum(p.gold_counts.values()),
            }
            for p in points
        ],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


# -- the annotator's own page ------------------------------------------------------------------


def annotator_progress(project: Project, user) -> dict[str, int]:
    """The answers (not skips) `user` gave in `project`, today (UTC) and in all."""
    mine = Annotation.objects.filter(project=project, annotator=user, skipped=False)
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # An answer given today was also last changed today: the updated_at bound lets the count
    # walk annotation_hist_idx (project, annotator, -updated_at) over today's answers only.
    return {
        "today": mine.filter(updated_at__gte=today, created_at__gte=today).count(),
        "total": mine.count(),
    }

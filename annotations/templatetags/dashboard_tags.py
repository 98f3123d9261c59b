"""Small filters for the dashboard, whose numbers arrive as JSON-ready values (ISO datetimes)."""

from __future__ import annotations

from datetime import date, datetime

from django import template

register = template.Library()


@register.filter
def iso(value: str | None) -> datetime | date | None:
    """An ISO date or datetime string back as a date or datetime (for `date`, `timesince`)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    except (TypeError, ValueError):
        return None


@register.filter
def duration(hours: float | None) -> str:
    """Hours of work as people say them: "40 minutes", "3.5 hours", "12 days"."""
    if hours is None:
        return ""
    if hours < 1:
        minutes = max(1, round(hours * 60))
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    if hours < 48:
        return f"{hours:.1f} hours"
    return f"{hours / 24:.1f} days"

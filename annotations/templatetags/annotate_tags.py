from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def tojson(value) -> str:
    """JSON for an HTML attribute; left unsafe on purpose so autoescaping quotes it."""
    return json.dumps(value)


@register.filter
def percent(value) -> str:
    """0.8234 → "82%"; None → "—" (not measured yet)."""
    if value is None or value == "":
        return "—"
    return f"{round(float(value) * 100)}%"

from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def tojson(value) -> str:
    """JSON for an HTML attribute; left unsafe on purpose so autoescaping quotes it."""
    return json.dumps(value)

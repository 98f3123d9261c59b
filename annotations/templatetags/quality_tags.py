"""Heat-map colours and plain-language readings for the quality page.

Cell colours are computed here, not in CSS, because they depend on the value; the text colour
is whichever of black and white contrasts more with the cell. With pure black and white that is
at least 4.58:1 for any background (the two contrasts cross at a luminance of 0.179), so every
cell meets WCAG AA for normal text.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

RGB = tuple[int, int, int]

NEUTRAL: RGB = (248, 249, 250)  # kappa 0, a share of 0
AGREE: RGB = (24, 100, 171)  # kappa 1: blue
DISAGREE: RGB = (201, 42, 42)  # kappa -1: red, worse than chance
SHARE: RGB = (95, 61, 196)  # a share of 1: violet, so it is not read as a kappa


def _mix(low: RGB, high: RGB, t: float) -> RGB:
    t = min(1.0, max(0.0, t))
    return tuple(round(a + (b - a) * t) for a, b in zip(low, high, strict=True))


def luminance(rgb: RGB) -> float:
    """WCAG relative luminance of an sRGB colour."""

    def linear(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def text_on(background: RGB) -> RGB:
    """Black or white, whichever is easier to read on `background`."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast(background, black) >= contrast(background, white) else white


def kappa_colour(value: float) -> RGB:
    """Diverging: white at 0 (chance), blue towards 1, red towards -1."""
    return _mix(NEUTRAL, AGREE if value >= 0 else DISAGREE, abs(value))


def share_colour(value: float) -> RGB:
    return _mix(NEUTRAL, SHARE, value)


def _colours(background: RGB) -> SafeString:
    """A heat cell's colours as data attributes; static/js/styles.js applies them (the
    Content-Security-Policy allows no inline style attributes)."""
    hex_bg = "#{:02x}{:02x}{:02x}".format(*background)
    fg = "#000" if text_on(background) == (0, 0, 0) else "#fff"
    return format_html('data-bg="{}" data-fg="{}"', hex_bg, fg)


@register.filter
def kappa_colours(value: float | None) -> SafeString:
    """Colour attributes of a kappa (or alpha) cell; empty for an undefined value."""
    return mark_safe("") if value is None else _colours(kappa_colour(float(value)))


@register.filter
def share_colours(value: float | None) -> SafeString:
    """Colour attributes of a cell holding a share of its row (0–1)."""
    return mark_safe("") if value is None else _colours(share_colour(float(value)))


@register.filter
def number(value: float | None, digits: int = 2) -> str:
    """0.41237 → "0.41"; None → "—" (undefined so far)."""
    return "—" if value is None else f"{float(value):.{int(digits)}f}"


@register.filter
def interval(bounds: list[float] | None) -> str:
    """[0.62, 0.91] → "62–91%"; None → "" (nothing measured)."""
    if not bounds:
        return ""
    low, high = bounds
    return f"{round(100 * low)}–{round(100 * high)}%"


# Landis & Koch (1977), the usual reading of a kappa: upper bound of each band.
_LANDIS_KOCH = [
    (0.20, "slight agreement"),
    (0.40, "fair agreement"),
    (0.60, "moderate agreement"),
    (0.80, "substantial agreement"),
]


@register.filter
def kappa_reading(value: float | None) -> str:
    """A kappa in words (Landis & Koch bands)."""
    if value is None:
        return "not defined yet"
    if value < 0:
        return "poor: less than chance"
    for upper, words in _LANDIS_KOCH:
        if value <= upper:
            return words
    return "almost perfect agreement"


@register.filter
def alpha_reading(value: float | None) -> str:
    """Krippendorff's alpha in words, by his own thresholds (2004): 0.800 and 0.667."""
    if value is None:
        return "not defined yet"
    if value >= 0.8:
        return "reliable"
    if value >= 0.667:
        return "good enough for tentative conclusions only"
    return "not reliable"

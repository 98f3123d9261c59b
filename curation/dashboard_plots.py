"""The dashboard's plots, drawn by matplotlib to SVG text in the training worker
(`curation.dashboard.dashboard_refresh`); the pages serve the stored text as it is.

Only the worker imports this module (matplotlib and numpy stay out of the web processes). No
pyplot: a `Figure` with its own SVG canvas keeps no global state between threads. The output is
deterministic (fixed hash salt, no date) and small (text as text, not as glyph paths), and no
text is read as mathtext: class names and usernames are user input.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from curation.dashboard import OTHERS, PLOT_SERIES, hour_of

__all__ = ["plots_render"]

STYLE = {
    "svg.hashsalt": "dataprepops-dashboard",
    "svg.fonttype": "none",
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#8a94a6",
    "axes.labelcolor": "#3b4252",
    "xtick.color": "#5b6475",
    "ytick.color": "#5b6475",
    "axes.grid": True,
    "grid.color": "#e9ecf2",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
SIZE = (6.4, 2.6)  # inches; the page scales the image to its column
PROGRESS = {"complete": "#2f9e44", "in_progress": "#f59f00", "open": "#ced4da"}
ACCENT = "#4f7cff"
#: Colours for annotators, in order of activity (tab10 without its grey).
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf",
]  # fmt: skip


def plots_render(data: dict[str, Any]) -> dict[str, str]:
    """SVG text of each plot that has something to show, keyed by name
    (`curation.dashboard.PLOTS`); `data` is the dashboard's payload, datetimes as datetimes."""
    drawers = {
        "progress": _progress,
        "throughput_hourly": _throughput_hourly,
        "throughput_daily": _throughput_daily,
        "model": _model,
        "gold_balance": _gold_balance,
        "agreement": _agreement,
        "versions": _versions,
    }
    plots = {}
    with matplotlib.rc_context(STYLE):
        for name, draw in drawers.items():
            figure = Figure(figsize=SIZE, layout="constrained")
            FigureCanvasSVG(figure)
            ax = figure.add_subplot()
            if draw(ax, data):
                plots[name] = _svg(figure)
    return plots


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _slant(names: list[str]) -> int:
    """Tick labels slant when they would not fit side by side."""
    return 30 if sum(len(name) + 2 for name in names) > 60 else 0


def _time_axis(ax) -> None:
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _progress(ax, data: dict[str, Any]) -> bool:
    progress = data["progress"]
    if not progress["items"] or progress["in_progress"] is None:
        return False
    over_time = progress["over_time"]
    parts = ("complete", "in_progress", "open")
    labels = ("Complete", "In progress", "Open")
    colours = [PROGRESS[part] for part in parts]
    if len(over_time) < 2:
        ax.figure.set_size_inches(SIZE[0], 1.3)
        left = 0
        for part, label, colour in zip(parts, labels, colours, strict=True):
            ax.barh([0], [progress[part]], left=left, color=colour, label=label, height=0.5)
            left += progress[part]
        ax.set_yticks([])
        ax.set_xlabel("Items")
    else:
        times = [row["measured_at"] for row in over_time]
        series = [[row[part] for row in over_time] for part in parts]
        ax.stackplot(times, *series, labels=labels, colors=colours, step="post")
        ax.set_ylabel("Items")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _time_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    return True


def _annotator_bars(ax, data: dict[str, Any], rows: list[dict], key: str, slots: list) -> bool:
    """Stacked bars of answers per annotator for each slot (hour or day); the annotators after
    the PLOT_SERIES most active share one grey series."""
    if not any(row["answers"] for row in rows):
        return False
    people = [p["username"] for p in data["throughput"]["annotators"]]
    series = {person: min(number, PLOT_SERIES) for number, person in enumerate(people)}
    index = {slot: i for i, slot in enumerate(slots)}
    heights = [[0] * len(slots) for _ in range(PLOT_SERIES + 1)]
    for row in rows:
        if row[key] in index and row["annotator"] in series:
            heights[series[row["annotator"]]][index[row[key]]] += row["answers"]
    names = people[:PLOT_SERIES] + [OTHERS]
    bottom = [0] * len(slots)
    width = (slots[1] - slots[0]) * 0.85 if len(slots) > 1 else timedelta(hours=1)
    for number, (name, height) in enumerate(zip(names, heights, strict=False)):
        drawn = [i for i, h in enumerate(height) if h]  # no patch for an empty bar
        if not drawn:
            continue
        ax.bar(
            [slots[i] for i in drawn],
            [height[i] for i in drawn],
            bottom=[bottom[i] for i in drawn],
            width=width,
            color=PALETTE[number] if number < PLOT_SERIES else "#adb5bd",
            label=name,
            align="edge",
        )
        bottom = [b + h for b, h in zip(bottom, height, strict=True)]
    ax.set_ylabel("Labels")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _time_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    return True


def _throughput_hourly(ax, data: dict[str, Any]) -> bool:
    anchor = _anchor(data)
    hours = data["throughput"]["hours_shown"]
    slots = [anchor - timedelta(hours=hours - 1 - i) for i in range(hours)]
    return _annotator_bars(ax, data, data["throughput"]["hourly"], "hour", slots)


def _throughput_daily(ax, data: dict[str, Any]) -> bool:
    anchor = _anchor(data)
    days = data["throughput"]["days_shown"]
    first = anchor.replace(hour=0)
    slots = [first - timedelta(days=days - 1 - i) for i in range(days)]
    rows = [
        {**row, "day": datetime.combine(row["day"], datetime.min.time(), tzinfo=anchor.tzinfo)}
        for row in data["throughput"]["daily"]
    ]
    return _annotator_bars(ax, data, rows, "day", slots)


def _anchor(data: dict[str, Any]) -> datetime:
    return hour_of(data["refreshed_at"])


def _model(ax, data: dict[str, Any]) -> bool:
    curve = data["model"]["curve"]
    if not curve:
        return False
    labels = [point["labels"] for point in curve]
    ax.fill_between(
        labels,
        [point["low"] for point in curve],
        [point["high"] for point in curve],
        color=ACCENT,
        alpha=0.18,
        linewidth=0,
        label="95% interval",
    )
    accuracy = [point["accuracy"] for point in curve]
    ax.plot(labels, accuracy, color=ACCENT, marker="o", markersize=3, label="Evaluation slice")
    ax.set_ylim(0, 1)
    ax.set_xlabel("Labels")
    ax.set_ylabel("Accuracy")
    ax.legend(loc="lower right")
    return True


def _gold_balance(ax, data: dict[str, Any]) -> bool:
    gold = data["gold"]
    over_time = gold["over_time"]
    if not over_time or not over_time[-1]["total"]:
        return False
    classes = gold["classes"]
    colours = [c["color"] or PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)]
    names = [c["name"] for c in classes]
    if len(over_time) < 2:
        counts = over_time[-1]["counts"]
        ax.bar(range(len(names)), [counts[n] for n in names], color=colours)
        ax.set_xticks(range(len(names)), names, rotation=_slant(names))
    else:
        times = [row["measured_at"] for row in over_time]
        series = [[row["counts"][n] for row in over_time] for n in names]
        ax.stackplot(times, *series, labels=names, colors=colours, step="post")
        _time_axis(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_ylabel("Gold labels")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return True


def _agreement(ax, data: dict[str, Any]) -> bool:
    rows = [row for row in data["agreement"] if row["mean"] is not None]
    if len(rows) < 2:  # one count is a number, not a line: the table shows it
        return False
    times = [row["measured_at"] for row in rows]
    ax.plot(times, [row["mean"] for row in rows], color=ACCENT, marker="o", markersize=3)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Mean agreement")
    _time_axis(ax)
    return True


def _versions(ax, data: dict[str, Any]) -> bool:
    measured = [v for v in reversed(data["versions"]) if v.get("accuracy") is not None]
    if not measured:
        return False
    names = [v["name"] for v in measured]
    accuracy = [v["accuracy"] for v in measured]
    below = [v["accuracy"] - (v["accuracy_low"] or v["accuracy"]) for v in measured]
    above = [(v["accuracy_high"] or v["accuracy"]) - v["accuracy"] for v in measured]
    positions = range(len(names))
    ax.errorbar(positions, accuracy, yerr=[below, above], fmt="o", color=ACCENT, capsize=3)
    ax.set_xticks(positions, names, rotation=_slant(names))
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy on test")
    return True

"""The prediction endpoint's wire format (docs/prediction-endpoint.md): the batch asked for and
the strict check of the answer.

A request: `{"project": name, "classes": [...], "multi_label": bool, "items": [{"id": external
id, "text": ...}]}`, or for images `{"id": ..., "image": base64, "format": "png" | "jpeg" | …}`
(at most `ENDPOINT_IMAGE_MAX_BYTES` before encoding: larger images are sent scaled down, as PNG).
The answer: `{"model_version": "...", "predictions": [{"id": ..., "scores": {class: p}}]}`.
Any fault in an answer refuses the whole batch (nothing stored) with a message that says what
and where: the server is a program, and a half-understood answer would rank the queue on junk.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from annotations.models import Item, Project

__all__ = ["EndpointAnswer", "EndpointAnswerError", "answer_parse", "request_body"]

#: Model versions longer than this are refused (they name the stored predictions).
VERSION_MAX = 150
#: Sum of a single-label answer's probabilities may be off 1 by this much (rounded output).
SUM_TOLERANCE = 0.01


class EndpointAnswerError(ValueError):
    """An answer that cannot be stored; the message says why."""


@dataclass(frozen=True)
class EndpointAnswer:
    model_version: str
    #: Probability per class for each external id, every class present (0 where not given).
    scores: dict[str, dict[str, float]]


def _image_entry(item: Item) -> dict[str, str] | None:
    """The item's image as the protocol carries it; None when it cannot be read."""
    try:
        with item.image.open("rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fmt = (item.image_format or "png").lower()
    cap = settings.ENDPOINT_IMAGE_MAX_BYTES
    if len(data) > cap:
        data, fmt = _scaled_png(item, data, cap)
        if data is None:
            return None
    return {"image": base64.b64encode(data).decode("ascii"), "format": fmt}


def _scaled_png(item: Item, data: bytes, cap: int) -> tuple[bytes | None, str]:
    """The image scaled down (halving its sides) until its PNG fits in `cap` bytes."""
    from PIL import Image

    from curation.pixel_budget import decoding_budget

    pixels = (item.image_width or 1) * (item.image_height or 1)
    try:
        with decoding_budget().hold(pixels), Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            while True:
                out = io.BytesIO()
                image.save(out, format="PNG", optimize=True)
                if out.tell() <= cap or max(image.size) <= 16:
                    return (out.getvalue() if out.tell() <= cap else None), "png"
                image = image.resize((max(1, image.width // 2), max(1, image.height // 2)))
    except Exception:  # noqa: BLE001 - Pillow raises many types; the item is skipped
        return None, "png"


def request_body(project: Project, items: Sequence[Item]) -> tuple[bytes, list[Item]]:
    """The JSON body asking for `items`, and the items it carries (an unreadable image is
    left out)."""
    entries, sent = [], []
    for item in items:
        if project.item_kind == Project.ItemKind.IMAGE:
            image = _image_entry(item)
            if image is None:
                continue
            entries.append({"id": item.external_id, **image})
        else:
            entries.append({"id": item.external_id, "text": item.text})
        sent.append(item)
    body = {
        "project": project.name,
        "classes": project.class_names().offered,
        "multi_label": project.is_multi_label,
        "items": entries,
    }
    return json.dumps(body, ensure_ascii=False).encode(), sent


def answer_parse(
    body: bytes, *, ids: Sequence[str], classes: Sequence[str], multi_label: bool
) -> EndpointAnswer:
    """The answer to a batch of `ids`, checked strictly: JSON, every asked id answered once and
    nothing else, known classes only, probabilities in [0, 1] (summing to 1 single-label)."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EndpointAnswerError(f"The answer is not JSON: {exc}.") from None
    if not isinstance(raw, dict):
        raise EndpointAnswerError("The answer must be a JSON object.")
    unknown = set(raw) - {"model_version", "predictions"}
    if unknown:
        raise EndpointAnswerError(f"Unknown field(s) in the answer: {', '.join(sorted(unknown))}.")
    version = raw.get("model_version", "")
    if version is None:
        version = ""
    if not isinstance(version, str) or len(version) > VERSION_MAX:
        raise EndpointAnswerError(
            f'"model_version" must be a string of at most {VERSION_MAX} characters.'
        )
    predictions = raw.get("predictions")
    if not isinstance(predictions, list):
        raise EndpointAnswerError('The answer needs "predictions": a list.')
    asked = set(ids)
    known = set(classes)
    out: dict[str, dict[str, float]] = {}
    for index, entry in enumerate(predictions):
        where = f"predictions[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"id", "scores"}:
            raise EndpointAnswerError(f'{where} must be an object with "id" and "scores" only.')
        item_id = entry.get("id")
        if not isinstance(item_id, str) or item_id not in asked:
            raise EndpointAnswerError(f"{where}: id {item_id!r} was not asked for.")
        if item_id in out:
            raise EndpointAnswerError(f"{where}: id {item_id!r} is answered twice.")
        out[item_id] = _scores(entry.get("scores"), where, known, classes, multi_label)
    missing = [i for i in ids if i not in out]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise EndpointAnswerError(f"No prediction for {shown}{more}.")
    return EndpointAnswer(version.strip(), out)


def _scores(
    raw: Any, where: str, known: set[str], classes: Sequence[str], multi_label: bool
) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise EndpointAnswerError(f'{where}: "scores" must be an object of class to probability.')
    for name, p in raw.items():
        if name not in known:
            raise EndpointAnswerError(f"{where}: {name!r} is not a label class.")
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
            raise EndpointAnswerError(f"{where}: the score of {name!r} is not a number: {p!r}.")
        if not 0.0 <= p <= 1.0:
            raise EndpointAnswerError(f"{where}: the score of {name!r} is {p}, not in [0, 1].")
    total = sum(float(p) for p in raw.values())
    if not multi_label and abs(total - 1.0) > SUM_TOLERANCE:
        raise EndpointAnswerError(
            f"{where}: the scores of a single-label project must sum to 1, not {total:.4g}."
        )
    return {name: round(float(raw.get(name, 0.0)), 6) for name in classes}

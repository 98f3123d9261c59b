"""Delivering the outbox: what the training worker runs (`deliver_due`), never a web request.

Each delivery is claimed with `SELECT … FOR UPDATE SKIP LOCKED` and leased (its
`next_attempt_at` moves past the longest an attempt can take), so workers running at once never
send the same row, and a worker that dies mid-way leaves it to the next one once the lease
ends. Each attempt is a signed POST (`signature`) to the checked address of the target
(`safety.resolve_target`), redirects followed by hand and each one checked again, with a
deadline for the whole attempt and a cap on the answer read. A failure is retried with
exponential backoff and jitter up to `WEBHOOKS_MAX_ATTEMPTS`; a hook that fails
`WEBHOOKS_DISABLE_AFTER` attempts in a row is disabled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from annotations.webhooks.models import PING, Webhook, WebhookAttempt, WebhookDelivery
from annotations.webhooks.safety import UnsafeTarget, resolve_target
from annotations.webhooks.services import webhook_disable

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Dataprepops-Signature"
MAX_REDIRECTS = 3
#: Bytes of an answer read at most (the rest is dropped unread).
MAX_RESPONSE_BYTES = 64 * 1024
#: Connect timeout (within the attempt's deadline).
CONNECT_SECONDS = 5.0
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 6 * 3600.0
JITTER = 0.2
USER_AGENT = "dataprepops-webhooks/1"
_REDIRECTS = {301, 302, 303, 307, 308}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def backoff_seconds(attempts: int, rng: random.Random | None = None) -> float:
    """Wait before the next try after `attempts` failed ones: 30 s, 60 s, 120 s, … (at most
    6 h), each stretched or shrunk by up to 20% at random so that hooks failing together do
    not retry together."""
    base = min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)
    return base * (1 + (rng or random).uniform(-JITTER, JITTER))


def lease_seconds() -> float:
    """Longer than any attempt can take: its deadline, plus a margin for the bookkeeping."""
    return settings.WEBHOOKS_TIMEOUT_SECONDS + 60.0


@dataclass
class Outcome:
    status_code: int | None
    error: str
    latency_ms: int
    url: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# --- One HTTP attempt ---------------------------------------------------------------------------


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """POST `body` to `url`, connecting only to checked addresses, redirects followed by hand
    (each target checked the same way, MAX_REDIRECTS at most); never raises."""
    started = time.monotonic()
    deadline = started + settings.WEBHOOKS_TIMEOUT_SECONDS
    status: int | None = None
    error = ""
    try:
        with httpx.Client(
            transport=transport or httpx.HTTPTransport(retries=0),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would connect by name, unchecked
        ) as client:
            for hop in range(MAX_REDIRECTS + 1):
                target = resolve_target(url)
                response_status, location = _send_once(client, target, url, body, headers, deadline)
                status = response_status
                if status not in _REDIRECTS or location is None:
                    break
                if hop == MAX_REDIRECTS:
                    error = f"More than {MAX_REDIRECTS} redirects."
                    break
                url = str(httpx.URL(url).join(location))
    except UnsafeTarget as exc:
        error = str(exc)
    except httpx.TimeoutException:
        error = f"Timed out after {settings.WEBHOOKS_TIMEOUT_SECONDS} s."
    except (httpx.HTTPError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except _DeadlinePassed:
        error = f"Timed out after {settings.WEBHOOKS_TIMEOUT_SECONDS} s."
    latency = int((time.monotonic() - started) * 1000)
    if not error and status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    return Outcome(status_code=status, error=error[:500], latency_ms=latency, url=url[:2000])


class _DeadlinePassed(Exception):
    pass


def _send_once(
    client: httpx.Client,
    target,
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
) -> tuple[int, str | None]:
    """One request to the checked address of `target`: the URL's host is replaced by that
    address (so nothing resolves the name again), the Host header and the TLS server name
    (SNI and certificate check) stay the name's. Returns (status, Location)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed
    original = httpx.URL(url)
    pinned = original.copy_with(host=str(target.address))
    extensions: dict = {
        "timeout": {
            "connect": min(CONNECT_SECONDS, left),
            "read": left,
            "write": left,
            "pool": left,
        }
    }
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    request = client.build_request(
        "POST",
        pinned,
        content=body,
        headers={**headers, "Host": original.netloc.decode("ascii")},
        extensions=extensions,
    )
    response = client.send(request, stream=True)
    try:
        read = 0
        # Raw bytes, asked for uncompressed: a small compressed answer cannot inflate here.
        chunks = () if response.is_stream_consumed else response.iter_raw()
        for chunk in chunks:
            read += len(chunk)
            if read >= MAX_RESPONSE_BYTES:
                break
            if time.monotonic() > deadline:
                raise _DeadlinePassed
    finally:
        response.close()
    return response.status_code, response.headers.get("location")


# --- The outbox -----------------------------------------------------------------------------


def _claim(now: datetime) -> WebhookDelivery | None:
    """Take one due delivery for this worker, or None. SKIP LOCKED passes over rows another
    worker is claiming right now; the lease written here keeps them away after the commit."""
    with transaction.atomic():
        due = (
            WebhookDelivery.objects.filter(
                status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
            )
            .filter(Q(webhook__active=True) | Q(event=PING))
            .order_by("next_attempt_at", "id")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        delivery = due.first()
        if delivery is None:
            return None
        delivery.next_attempt_at = now + timedelta(seconds=lease_seconds())
        delivery.save(update_fields=["next_attempt_at"])
    return delivery


def headers_for(delivery: WebhookDelivery, secret: str, body: bytes, timestamp: int) -> dict:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        "X-Dataprepops-Event": delivery.event,
        "X-Dataprepops-Event-Id": str(delivery.event_id),
        "X-Dataprepops-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def deliver_one(
    delivery: WebhookDelivery,
    *,
    transport: httpx.BaseTransport | None = None,
    now: datetime | None = None,
) -> Outcome:
    """One attempt of a claimed delivery, then its record (attempt log, state, the hook's
    failure count)."""
    hook = Webhook.objects.get(pk=delivery.webhook_id)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    started_at = timezone.now()
    headers = headers_for(delivery, hook.secret, body, int(started_at.timestamp()))
    outcome = post(hook.url, body, headers, transport=transport)
    _record(delivery, hook, outcome, started_at, now or timezone.now())
    return outcome


def _record(
    delivery: WebhookDelivery, hook: Webhook, outcome: Outcome, started_at, now: datetime
) -> None:
    attempts = delivery.attempts + 1
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            started_at=started_at,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
            url=outcome.url,
        )
        fields = {
            "attempts": attempts,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "last_latency_ms": outcome.latency_ms,
        }
        if outcome.ok:
            fields |= {"status": WebhookDelivery.Status.DELIVERED, "delivered_at": now}
        elif attempts >= settings.WEBHOOKS_MAX_ATTEMPTS or delivery.event == PING:
            fields["status"] = WebhookDelivery.Status.FAILED  # a test event is tried once
        else:
            fields["next_attempt_at"] = now + timedelta(seconds=backoff_seconds(attempts))
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
        hooks = Webhook.objects.filter(pk=hook.pk)
        if outcome.ok:
            hooks.update(consecutive_failures=0, last_delivery_at=now)
            return
        hooks.update(consecutive_failures=F("consecutive_failures") + 1, last_delivery_at=now)
        failures = hooks.values_list("consecutive_failures", flat=True).first() or 0
        if failures >= settings.WEBHOOKS_DISABLE_AFTER:
            webhook_disable(
                hook.pk,
                f"Disabled after {failures} failed attempts in a row; the last: {outcome.error}",
            )
            logger.warning("webhook %s disabled after %s failures in a row", hook.pk, failures)


def deliver_due(
    *,
    limit: int = 200,
    transport: httpx.BaseTransport | None = None,
    now: datetime | None = None,
) -> int:
    """Deliver due rows one at a time until none is due (or `limit` were tried); returns how
    many were tried. Safe to run in any number of workers at once."""
    tried = 0
    while tried < limit:
        moment = now or timezone.now()
        delivery = _claim(moment)
        if delivery is None:
            break
        tried += 1
        outcome = deliver_one(delivery, transport=transport, now=moment)
        logger.info(
            "webhook delivery %s (%s) to hook %s: %s in %s ms",
            delivery.pk,
            delivery.event,
            delivery.webhook_id,
            outcome.status_code or outcome.error,
            outcome.latency_ms,
        )
    return tried


def deliver_due_safely() -> int:
    """`deliver_due` for the worker: never raises, and leaves no stale connection behind."""
    close_old_connections()
    try:
        return deliver_due()
    except Exception:
        logger.exception("delivering webhooks failed")
        return 0
    finally:
        close_old_connections()

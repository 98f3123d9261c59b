"""Outgoing HTTP to URLs that users gave: webhooks (`annotations.webhooks.delivery`) and a
project's prediction endpoint (`curation.endpoint_run`). Used by the training worker only.

Every request connects to an address checked by `annotations.webhooks.safety.resolve_target`
(the SSRF rules and settings shared by both), never resolving the name again: the URL's host is
replaced by the checked address, while the Host header and the TLS server name (SNI and the
certificate check) stay the name's, so DNS rebinding cannot send it elsewhere. Redirects are
followed by hand, each target checked the same way; the whole exchange has one deadline and
the answer read is capped. No proxy from the environment (it would connect by name, unchecked).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

from annotations.webhooks.safety import Target, UnsafeTarget, resolve_target

__all__ = ["MAX_REDIRECTS", "Outcome", "backoff_seconds", "post"]

MAX_REDIRECTS = 3
#: Connect timeout (within the deadline).
CONNECT_SECONDS = 5.0
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 6 * 3600.0
JITTER = 0.2
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass
class Outcome:
    """What one POST came to: the last status (None when no answer came), an error that says
    what failed (empty on a 2xx), the time taken, the last URL asked and the answer's first
    bytes (`truncated` when it was longer than the cap)."""

    status_code: int | None
    error: str
    latency_ms: int
    url: str
    body: bytes = b""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_seconds(attempts: int, rng: random.Random | None = None) -> float:
    """Wait before the next try after `attempts` failed ones: 30 s, 60 s, 120 s, … (at most
    6 h), each stretched or shrunk by up to 20% at random so that targets failing together do
    not retry together."""
    base = min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)
    return base * (1 + (rng or random).uniform(-JITTER, JITTER))


class _DeadlinePassed(Exception):
    pass


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    max_body: int,
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """POST `body` to `url`, connecting only to checked addresses, redirects followed by hand
    (each target checked the same way, MAX_REDIRECTS at most), all within `timeout` seconds,
    reading at most `max_body` bytes of the answer; never raises."""
    started = time.monotonic()
    deadline = started + timeout
    status: int | None = None
    answer, truncated = b"", False
    error = ""
    try:
        with httpx.Client(
            transport=transport or httpx.HTTPTransport(retries=0),
            follow_redirects=False,
            trust_env=False,
        ) as client:
            for hop in range(MAX_REDIRECTS + 1):
                target = resolve_target(url)
                status, location, answer, truncated = _send_once(
                    client, target, url, body, headers, deadline, max_body
                )
                if status not in _REDIRECTS or location is None:
                    break
                if hop == MAX_REDIRECTS:
                    error = f"More than {MAX_REDIRECTS} redirects."
                    break
                url = str(httpx.URL(url).join(location))
    except UnsafeTarget as exc:
        error = str(exc)
    except (httpx.TimeoutException, _DeadlinePassed):
        error = f"Timed out after {timeout:g} s."
    except (httpx.HTTPError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    latency = int((time.monotonic() - started) * 1000)
    if not error and status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    return Outcome(
        status_code=status,
        error=error[:500],
        latency_ms=latency,
        url=url[:2000],
        body=answer if not error else b"",
        truncated=truncated,
    )


def _send_once(
    client: httpx.Client,
    target: Target,
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    max_body: int,
) -> tuple[int, str | None, bytes, bool]:
    """One request to the checked address of `target`. Returns (status, Location, the answer's
    first `max_body` bytes, whether there was more)."""
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
    parts: list[bytes] = []
    read, truncated = 0, False
    try:
        # Raw bytes, asked for uncompressed: a small compressed answer cannot inflate here.
        chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
        for chunk in chunks:
            if read + len(chunk) > max_body:
                parts.append(chunk[: max_body - read])
                truncated = True
                break
            parts.append(chunk)
            read += len(chunk)
            if time.monotonic() > deadline:
                raise _DeadlinePassed
    finally:
        response.close()
    return response.status_code, response.headers.get("location"), b"".join(parts), truncated

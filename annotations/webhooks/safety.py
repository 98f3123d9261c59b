"""Where a webhook (or a project's prediction endpoint) may send: the checks that keep a request
to a URL a user gave from reaching inside the network (SSRF).

A target's host is resolved once (`resolve_target`), every address it resolves to is checked,
and the delivery connects to the checked address, never resolving again: a DNS answer that
changes between the check and the connection (DNS rebinding) cannot redirect it. Refused by
default: private, loopback, link-local (the cloud metadata address 169.254.169.254 among them),
unique-local, shared (CGNAT), multicast, reserved and unspecified addresses, in IPv4 and IPv6,
including IPv4 addresses wrapped in IPv6 (mapped, 6to4, Teredo, NAT64). A site admin may allow
private targets (`WEBHOOKS_ALLOW_PRIVATE`, or the networks of `WEBHOOKS_ALLOWED_NETWORKS`);
multicast and unspecified addresses are refused even then.

The standard library and Django only (no HTTP client): forms run these in the web process.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from socket import IPPROTO_TCP, SOCK_STREAM, gaierror, getaddrinfo
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public either


class UnsafeTarget(ValueError):
    """A URL no request may be sent to; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its scheme, the host as written (IDNA-encoded, for Host and TLS), its
    port, and the address to connect to."""

    scheme: str
    host: str
    port: int
    address: IPAddress


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why a request may not connect to `ip` under the site's settings; None when it may."""
    if ip.version == 6:
        inner = _embedded_ipv4(ip)
        if inner is not None:
            problem = address_problem(inner)
            return f"{problem} (inside the IPv6 address {ip})" if problem else None
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    kind = _non_public_kind(ip)
    if kind is None:
        return None
    if settings.WEBHOOKS_ALLOW_PRIVATE or any(
        ip in ipaddress.ip_network(net, strict=False) for net in settings.WEBHOOKS_ALLOWED_NETWORKS
    ):
        return None
    return f"{ip} is a {kind} address"


def _non_public_kind(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.version == 6 and ip in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if ip.version == 4 and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, IDNA host, port) of a URL a request may go to, else `UnsafeTarget`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"Not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeTarget("Use an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("Leave credentials out of the URL.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeTarget("The URL has no host.")
    try:
        host = host.encode("idna").decode("ascii") if not _is_ip(host) else host
    except UnicodeError:
        raise UnsafeTarget(f"The host {host!r} is not a valid domain name.") from None
    return scheme, host, port or (443 if scheme == "https" else 80)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order, each once."""
    if _is_ip(host):
        return [ipaddress.ip_address(host)]
    try:
        infos = getaddrinfo(host, port, type=SOCK_STREAM, proto=IPPROTO_TCP)
    except (gaierror, UnicodeError) as exc:
        raise UnsafeTarget(f"The host {host} could not be resolved ({exc}).") from None
    seen: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    if not seen:
        raise UnsafeTarget(f"The host {host} has no address.")
    return seen


def resolve_target(url: str) -> Target:
    """Check `url` and resolve its host once; every address must be allowed (a name with one
    internal address among public ones is refused), and the first is the one to connect to."""
    scheme, host, port = split_url(url)
    addresses = resolve(host, port)
    for ip in addresses:
        problem = address_problem(ip)
        if problem:
            shown = host if _is_ip(host) else f"{host} resolves to {ip}; "
            detail = problem if _is_ip(host) else f"{shown}{problem}"
            raise UnsafeTarget(f"Refused: {detail}. Requests go to public addresses only.")
    return Target(scheme=scheme, host=host, port=port, address=addresses[0])


def checked_url(url: str, *, missing: str) -> str:
    """`url` stripped, if requests may go there (scheme, length, and every address its host
    resolves to now); else a Django ValidationError on the form's `url` field that says why
    (`missing` when it is empty). Webhooks and prediction endpoints check their URLs so."""
    url = (url or "").strip()
    if not url:
        raise ValidationError({"url": missing})
    if len(url) > 2000:
        raise ValidationError({"url": "The URL is longer than 2,000 characters."})
    try:
        resolve_target(url)
    except UnsafeTarget as exc:
        raise ValidationError({"url": str(exc)}) from None
    return url

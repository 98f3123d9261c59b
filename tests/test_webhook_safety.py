"""SSRF: a webhook never reaches an internal address, whatever the URL, the DNS answers or the
redirects say; and it connects to the address it checked (DNS rebinding)."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from django.core.exceptions import ValidationError

from annotations.models import Item
from annotations.webhooks import safety
from annotations.webhooks.delivery import deliver_due, post
from annotations.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent
from annotations.webhooks.safety import UnsafeTarget, resolve_target
from annotations.webhooks.services import webhook_create
from tests.conftest import submit_handed_out
from tests.webhook_receiver import start_receiver

PUBLIC = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/",
    "http://10.0.0.5/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 around 10.0.0.1
]


def fake_dns(monkeypatch, *answers: list[str]) -> list[str]:
    """Make the resolver answer `answers[0]` to the first lookup, `answers[1]` to the next, …
    (the last one from then on); returns the names looked up."""
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        addresses = answers[min(len(asked), len(answers)) - 1]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in addresses
        ]

    monkeypatch.setattr(safety, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize("url", REFUSED)
def test_internal_addresses_are_refused_by_default(url):
    with pytest.raises(UnsafeTarget, match="Refused"):
        resolve_target(url)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "http:///nohost"],
)
def test_only_http_and_https_urls_with_a_host_are_taken(url):
    with pytest.raises(UnsafeTarget):
        resolve_target(url)


def test_a_public_address_is_taken(settings):
    target = resolve_target(f"https://{PUBLIC}:8443/x")
    assert (target.scheme, target.port, str(target.address)) == ("https", 8443, PUBLIC)


def test_the_allow_private_setting_lets_private_targets_through_but_not_multicast(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    assert str(resolve_target("http://127.0.0.1:9/").address) == "127.0.0.1"
    assert str(resolve_target("http://[::1]:9/").address) == "::1"
    with pytest.raises(UnsafeTarget):
        resolve_target("http://224.0.0.1/")
    with pytest.raises(UnsafeTarget):
        resolve_target("http://0.0.0.0/")


def test_an_allowed_network_lets_only_its_own_addresses_through(settings):
    settings.WEBHOOKS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    assert str(resolve_target("http://10.1.2.3/").address) == "10.1.2.3"
    with pytest.raises(UnsafeTarget):
        resolve_target("http://10.2.0.1/")


def test_a_hostname_resolving_to_loopback_is_refused_at_registration(project, monkeypatch):
    fake_dns(monkeypatch, ["127.0.0.1"])
    with pytest.raises(ValidationError) as refused:
        webhook_create(
            project=project,
            url="https://hooks.example.com/",
            events=[WebhookEvent.ANNOTATION_SAVED],
        )
    assert "hooks.example.com resolves to 127.0.0.1" in str(refused.value)
    assert not Webhook.objects.exists()


def test_a_hostname_with_one_internal_address_among_public_ones_is_refused(monkeypatch):
    fake_dns(monkeypatch, [PUBLIC, "10.0.0.7"])
    with pytest.raises(UnsafeTarget, match="10.0.0.7"):
        resolve_target("https://hooks.example.com/")


def test_a_hostname_that_does_not_resolve_is_refused_with_the_reason(monkeypatch):
    def fails(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(safety, "getaddrinfo", fails)
    with pytest.raises(UnsafeTarget, match="could not be resolved"):
        resolve_target("https://nowhere.invalid/")


def test_a_hostname_that_turns_internal_after_registration_is_refused_at_delivery(
    project, annotator, monkeypatch
):
    fake_dns(monkeypatch, [PUBLIC], ["127.0.0.1"])
    hook = webhook_create(
        project=project, url="http://hooks.example.com/", events=[WebhookEvent.ANNOTATION_SAVED]
    )
    project.refresh_from_db()
    item = Item.objects.filter(project=project).order_by("id").first()
    submit_handed_out(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4())
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
    assert deliver_due(transport=transport) == 1
    assert sent == []
    attempt = WebhookAttempt.objects.get(delivery__webhook=hook)
    assert attempt.status_code is None
    assert "resolves to 127.0.0.1" in attempt.error and "loopback" in attempt.error
    assert WebhookDelivery.objects.get().status == WebhookDelivery.Status.PENDING  # retried


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dns_rebinding_connects_to_the_address_that_was_checked(monkeypatch, scheme):
    """The resolver answers a public address first and 127.0.0.1 afterwards: the request goes
    to the public address, with the name in Host and in TLS (SNI), and the name is looked up
    once."""
    asked = fake_dns(monkeypatch, [PUBLIC], ["127.0.0.1"])
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(204))
    outcome = post(
        f"{scheme}://hooks.example.com:8443/in?x=1",
        b"{}",
        {"Content-Type": "application/json"},
        transport=transport,
    )
    assert outcome.ok and outcome.status_code == 204
    assert asked == ["hooks.example.com"]
    (request,) = sent
    assert request.url.host == PUBLIC
    assert request.url.port == 8443 and request.url.raw_path == b"/in?x=1"
    assert request.headers["Host"] == "hooks.example.com:8443"
    if scheme == "https":
        assert request.extensions["sni_hostname"] == "hooks.example.com"
    else:
        assert "sni_hostname" not in request.extensions


def test_an_ipv6_answer_is_connected_to_as_an_ipv6_address(monkeypatch):
    fake_dns(monkeypatch, [PUBLIC_V6])
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
    assert post("https://v6.example.com/", b"{}", {}, transport=transport).ok
    assert sent[0].url.host == PUBLIC_V6
    assert sent[0].headers["Host"] == "v6.example.com"


def test_a_redirect_to_an_internal_address_is_not_followed(monkeypatch):
    fake_dns(monkeypatch, [PUBLIC])
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/"})

    outcome = post("https://hooks.example.com/", b"{}", {}, transport=httpx.MockTransport(answer))
    assert len(sent) == 1
    assert not outcome.ok and outcome.status_code == 302
    assert "169.254.169.254 is a link-local address" in outcome.error


@pytest.fixture
def two_receivers():
    first, second = start_receiver("127.0.0.2"), start_receiver("127.0.0.1")
    yield first, second
    for receiver in (first, second):
        receiver.server.shutdown()
        receiver.server.server_close()


def test_a_real_redirect_to_loopback_from_an_allowed_target_is_refused(settings, two_receivers):
    """The allowed receiver (127.0.0.2, in WEBHOOKS_ALLOWED_NETWORKS) redirects to one on
    127.0.0.1, which is not allowed: nothing reaches the second."""
    settings.WEBHOOKS_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    allowed, internal = two_receivers
    allowed.answers = [(307, {"Location": internal.url})]
    outcome = post(allowed.url, b"{}", {})
    assert len(allowed.requests) == 1 and internal.requests == []
    assert "127.0.0.1 is a loopback address" in outcome.error


def test_redirects_to_allowed_targets_are_followed_a_few_times_at_most(settings, two_receivers):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    first, second = two_receivers
    first.answers = [(308, {"Location": second.url})]
    outcome = post(first.url, b'{"a":1}', {"Content-Type": "application/json"})
    assert outcome.ok and outcome.url == second.url
    assert second.requests[0].body == b'{"a":1}'
    first.answers = [(302, {"Location": first.url})] * 10
    looping = post(first.url, b"{}", {})
    assert not looping.ok and "More than 3 redirects" in looping.error

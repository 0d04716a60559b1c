"""Team webhooks cannot be pointed at the cluster's own services: a URL whose host resolves
to a loopback, private, link-local, metadata or other non-public address is refused when a
lead saves it (400, naming the address and why) and again when the worker sends (the
delivery fails with the reason, and no connection is made). Only allow-listed hosts pass,
and those are really delivered to. Every server here is a loopback server the test starts;
the connection guard (tests/notifications/conftest.py) makes any other connection fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.core import outbound
from apps.core.errors import InvalidInput
from apps.notifications import signing
from apps.notifications.models import Channel, Delivery, DeliveryStatus, TeamWebhook
from apps.notifications.services import configure_webhook, notify
from apps.notifications.tasks import deliver
from tests.notifications.servers import ConnectionGuard, Counter, FakeDNS, HTTPReceiver

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_0123456789abcdef"
# A public address a test name may resolve to. Nothing connects to it: the guard refuses.
PUBLIC = "93.184.215.14"

# (a URL, given the counting servers' URLs; what the refusal must say)
REFUSED: dict[str, tuple[Callable[[Counter, Counter], str], str]] = {
    "loopback": (lambda c, c6: c.url, "resolves to 127.0.0.1, a loopback address"),
    "private": (lambda c, c6: "http://10.0.0.1/", "resolves to 10.0.0.1, a private address"),
    "metadata": (lambda c, c6: "http://169.254.169.254/latest/meta-data/", "169.254.169.254, a cloud metadata"),
    "ipv6 loopback": (lambda c, c6: c6.url, "resolves to ::1, a loopback address"),
    "localhost": (lambda c, c6: f"http://localhost:{c.port}/hook", "a loopback address"),
    "name resolving to loopback": (lambda c, c6: f"http://intranet.example.test:{c.port}/", "127.0.0.1, a loopback"),
}


@pytest.fixture
def counters(counter: Counter, counter6: Counter) -> tuple[Counter, Counter]:
    return counter, counter6


def webhook_deliveries() -> list[Delivery]:
    return list(Delivery.objects.filter(channel=Channel.WEBHOOK).order_by("id"))


def tell(team: Team) -> None:
    notify("promotion.requested", team=team, users=[], subject="s", body="b", payload={"request": {"id": 1}})


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_webhook_to_an_internal_address_is_refused_when_saved(
    case: str, team: Team, lin: User, counters: tuple[Counter, Counter], dns: FakeDNS, guard: ConnectionGuard
) -> None:
    dns.names["intranet.example.test"] = ["127.0.0.1"]
    make_url, says = REFUSED[case]
    with pytest.raises(InvalidInput) as refused:
        configure_webhook(lin, team, url=make_url(*counters), secret=SECRET)
    [message] = refused.value.fields["url"]
    assert says in message and message.startswith("The webhook URL ")
    assert not TeamWebhook.objects.filter(team=team).exists()
    assert (counters[0].connections, counters[1].connections, guard.attempts) == (0, 0, [])


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_webhook_to_an_internal_address_is_refused_when_sent(
    case: str,
    team: Team,
    lin: User,
    counters: tuple[Counter, Counter],
    dns: FakeDNS,
    guard: ConnectionGuard,
    settings: Any,
) -> None:
    """The URL passed when it was saved (the name resolved to a public address then, or the
    host was allow-listed then); at send time it resolves to a refused address."""
    make_url, says = REFUSED[case]
    dns.names["intranet.example.test"] = lambda lookup: [PUBLIC] if lookup == 1 else ["127.0.0.1"]
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "169.254.0.0/16"]
    configure_webhook(lin, team, url=make_url(*counters), secret=SECRET)
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = []  # a platform admin took them off the list
    tell(team)
    [hook] = webhook_deliveries()
    assert deliver(hook.pk) == "failed"  # at once: retrying cannot make the address acceptable
    hook.refresh_from_db()
    assert hook.status == DeliveryStatus.FAILED and hook.attempts == 1
    assert hook.last_error.startswith("Refused: The webhook URL ") and says in hook.last_error
    assert (counters[0].connections, counters[1].connections, guard.attempts) == (0, 0, [])


@pytest.fixture
def redirect_to_loopback(counter: Counter) -> Iterator[HTTPReceiver]:
    """A receiver that answers 302 with Location: the counting server's URL."""
    with HTTPReceiver("127.0.0.1") as redirector:
        redirector.status = 302
        redirector.headers = {"Location": counter.url}
        yield redirector


def test_a_redirect_is_not_followed_and_fails_the_delivery(
    team: Team,
    lin: User,
    counter: Counter,
    redirect_to_loopback: HTTPReceiver,
    guard: ConnectionGuard,
    settings: Any,
) -> None:
    # Only the first hop (that host and port) is allow-listed; the target is a loopback URL.
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{redirect_to_loopback.port}"]
    configure_webhook(lin, team, url=redirect_to_loopback.url, secret=SECRET)
    with pytest.raises(InvalidInput, match="loopback"):  # the target itself would be refused
        configure_webhook(lin, team, url=counter.url)
    tell(team)
    [hook] = webhook_deliveries()
    assert deliver(hook.pk) == "failed"
    hook.refresh_from_db()
    assert "answered 302" in hook.last_error and f"redirect to {counter.url}" in hook.last_error
    assert "not followed" in hook.last_error
    assert len(redirect_to_loopback.calls) == 1
    assert counter.connections == 0 and guard.to("127.0.0.1") == 1  # the first hop, nothing else


def test_an_allow_listed_host_is_delivered_to(
    team: Team, lin: User, http_receiver: HTTPReceiver, dns: FakeDNS, settings: Any
) -> None:
    dns.names["hooks.internal.example.test"] = ["127.0.0.1"]
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["hooks.internal.example.test"]
    url = f"http://hooks.internal.example.test:{http_receiver.port}/hook"
    configure_webhook(lin, team, url=url, secret=SECRET)
    tell(team)
    [hook] = webhook_deliveries()
    assert deliver(hook.pk) == "sent"
    [call] = http_receiver.calls
    headers = call["headers"]
    assert headers["Host"] == f"hooks.internal.example.test:{http_receiver.port}"  # the name, not the address
    assert signing.verify(SECRET, headers["X-Plinth-Timestamp"], call["body"], headers["X-Plinth-Signature"])


def test_the_send_connects_to_the_address_it_checked(
    team: Team, lin: User, dns: FakeDNS, guard: ConnectionGuard, settings: Any
) -> None:
    """DNS rebinding between the check and the connection: the first lookup of a send
    answers 127.0.0.1 (allow-listed), any later one 127.0.0.2 (not). The call must reach
    127.0.0.1 after exactly one lookup."""
    with HTTPReceiver("127.0.0.1") as checked, Counter("127.0.0.2", port=checked.port) as other:
        settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1/32"]
        dns.names["moving.example.test"] = ["127.0.0.1"]
        configure_webhook(lin, team, url=f"http://moving.example.test:{checked.port}/hook", secret=SECRET)
        dns.lookups.clear()
        dns.names["moving.example.test"] = lambda lookup: ["127.0.0.1"] if lookup == 1 else ["127.0.0.2"]
        tell(team)
        [hook] = webhook_deliveries()
        assert deliver(hook.pk) == "sent"
        assert (len(checked.calls), other.connections, dns.lookups["moving.example.test"]) == (1, 0, 1)
        assert guard.attempts == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1, a loopback address (IPv4-mapped)"),
        ("http://[::ffff:169.254.169.254]/", "a cloud metadata address (IPv4-mapped)"),
        ("http://2130706433/", "127.0.0.1, a loopback address"),  # 127.0.0.1 written as a number
        ("http://0.0.0.0:8080/", "0.0.0.0, an unspecified address"),
        ("http://172.16.5.4/", "a private address"),
        ("http://192.168.1.1/", "a private address"),
        ("http://[fd12:3456::1]/", "a private address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://169.254.10.10/", "a link-local address"),
        ("http://100.64.0.1/", "a shared (carrier-grade NAT) address"),
        ("http://224.0.0.251/", "a multicast address"),
        ("http://240.0.0.1/", "a reserved address"),
        ("http://198.18.0.1/", "not publicly routable"),
        ("http://[64:ff9b::a00:1]/", "64:ff9b::a00:1"),  # NAT64 of 10.0.0.1
        ("https://user:pass@hooks.example.test/", "must not contain a user name or password"),
        ("ftp://hooks.example.test/", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
    ],
)
def test_the_validator_names_why_it_refuses(url: str, says: str, guard: ConnectionGuard) -> None:
    with pytest.raises(outbound.RefusedURL) as refused:
        outbound.validate_url(url)
    assert says in refused.value.reason
    assert guard.attempts == []


def test_public_and_not_yet_resolvable_hosts_pass_the_validator(dns: FakeDNS, guard: ConnectionGuard) -> None:
    dns.names["hooks.public.example.test"] = [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert outbound.validate_url(" https://hooks.public.example.test/x ") == "https://hooks.public.example.test/x"
    # No address now: accepted (every send checks again), not refused.
    assert outbound.validate_url("https://not-yet.example.test/x") == "https://not-yet.example.test/x"
    assert guard.attempts == []


def test_a_name_with_one_internal_address_among_public_ones_is_refused(dns: FakeDNS) -> None:
    dns.names["mixed.example.test"] = [PUBLIC, "10.1.2.3"]
    with pytest.raises(outbound.RefusedURL, match=r"10\.1\.2\.3, a private address"):
        outbound.validate_url("https://mixed.example.test/")


def test_allow_list_entries_are_exact(settings: Any, dns: FakeDNS) -> None:
    dns.names["relay.example.test"] = ["10.0.0.7"]
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["relay.example.test:8443", "10.9.0.0/16"]
    assert outbound.validate_url("https://relay.example.test:8443/") == "https://relay.example.test:8443/"
    with pytest.raises(outbound.RefusedURL, match=r"10\.0\.0\.7"):  # another port of the same host
        outbound.validate_url("https://relay.example.test/")
    assert outbound.validate_url("http://10.9.8.7/") == "http://10.9.8.7/"
    with pytest.raises(outbound.RefusedURL, match=r"10\.10\.0\.1"):  # outside the allowed network
        outbound.validate_url("http://10.10.0.1/")


def test_a_name_that_does_not_resolve_at_send_time_is_retried(
    team: Team, lin: User, dns: FakeDNS, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliver, "apply_async", lambda args, countdown: None)
    configure_webhook(lin, team, url="https://gone.example.test/hook", secret=SECRET)
    tell(team)
    [hook] = webhook_deliveries()
    assert deliver(hook.pk) == "retry"
    hook.refresh_from_db()
    assert hook.status == DeliveryStatus.PENDING and "does not resolve" in hook.last_error

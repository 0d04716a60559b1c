"""The team webhook page: an internal address is refused with a 400 that names it, and the
signing secret is shown once (post/redirect/get), never again, not even in part; a lead
rotates it from the page."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.notifications.models import TeamWebhook
from tests.conftest import client_for
from tests.notifications.servers import ConnectionGuard, FakeDNS

pytestmark = pytest.mark.django_db

PAGE = "/models/teams/demo/webhook/"
PUBLIC = "93.184.215.14"  # what hooks.example.test resolves to here; nothing connects to it


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> ConnectionGuard:
    FakeDNS(monkeypatch).names["hooks.example.test"] = [PUBLIC]
    return ConnectionGuard(monkeypatch)


def pieces(secret: str, size: int = 6) -> list[str]:
    """Every run of `size` characters of the secret but its fixed prefix `whsec_` itself (a
    page may name the format): "hsec_a", "sec_ab", ... all carry some of the secret."""
    return [secret[i : i + size] for i in range(1, len(secret) - size + 1)]


def shown_after(browser: Client, response: Any) -> str:
    assert response.status_code == 302 and response["Location"] == PAGE
    page = browser.get(PAGE)
    assert "no-store" in page["Cache-Control"]
    return str(page.context["shown_secret"])


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:9/hook", "resolves to 127.0.0.1, a loopback address."),
        ("http://10.0.0.1/", "resolves to 10.0.0.1, a private address."),
        ("http://169.254.169.254/latest/meta-data/", "resolves to 169.254.169.254, a cloud metadata address."),
        ("http://[::1]/", "resolves to ::1, a loopback address."),
        ("http://localhost:8000/", "a loopback address."),
    ],
)
def test_an_internal_address_is_refused_with_the_reason(
    url: str, says: str, team: Team, lin: User, network: ConnectionGuard
) -> None:
    response = client_for(lin).post(PAGE, {"url": url, "secret": "t" * 24, "is_active": "on"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "The webhook URL resolves to " in html and says in html
    assert "t" * 24 not in html  # a typed secret is not echoed back into the page
    assert not TeamWebhook.objects.filter(team=team).exists()
    assert network.attempts == []


def test_the_made_secret_is_shown_once_then_never_in_part(team: Team, lin: User) -> None:
    browser = client_for(lin)
    secret = shown_after(browser, browser.post(PAGE, {"url": "https://hooks.example.test/p", "is_active": "on"}))
    assert secret.startswith("whsec_") and secret == TeamWebhook.objects.get(team=team).secret
    again = browser.get(PAGE)
    html = again.content.decode()
    assert again.context["shown_secret"] == ""
    assert [piece for piece in pieces(secret) if piece in html] == []
    assert "Signing secret set on" in html and 'value="rotate"' in html
    # Saving the URL again keeps the secret and shows nothing of it.
    response = browser.post(PAGE, {"url": "https://hooks.example.test/q", "is_active": "on"})
    assert response.status_code == 302
    html = browser.get(PAGE).content.decode()
    assert [piece for piece in pieces(secret) if piece in html] == []


def test_a_lead_rotates_the_secret_and_sees_the_new_one_once(team: Team, lin: User) -> None:
    browser = client_for(lin)
    first = shown_after(browser, browser.post(PAGE, {"url": "https://hooks.example.test/p", "is_active": "on"}))
    second = shown_after(browser, browser.post(PAGE, {"action": "rotate"}))
    hook = TeamWebhook.objects.get(team=team)
    assert second != first and hook.secret == second and hook.url == "https://hooks.example.test/p"
    html = browser.get(PAGE).content.decode()
    assert [piece for piece in pieces(second) + pieces(first) if piece in html] == []
    [event] = AuditEvent.objects.filter(verb="team.webhook_secret_rotated")
    assert event.actor_id == lin.pk
    assert second not in str(event.after) and first not in str(event.after)


def test_rotating_without_a_webhook_is_a_conflict(team: Team, lin: User) -> None:
    response = client_for(lin).post(PAGE, {"action": "rotate"})
    assert response.status_code == 409
    assert "no webhook yet" in response.content.decode()


def test_only_leads_rotate(team: Team, lin: User, ada: User, omar: User) -> None:
    browser = client_for(lin)
    secret = shown_after(browser, browser.post(PAGE, {"url": "https://hooks.example.test/p", "is_active": "on"}))
    assert client_for(ada).post(PAGE, {"action": "rotate"}).status_code == 403
    assert client_for(omar).post(PAGE, {"action": "rotate"}).status_code == 404
    assert TeamWebhook.objects.get(team=team).secret == secret

"""Notifications: email through Django's email backend, and the team's webhook — a real
HTTP server in this process receives the JSON and checks the HMAC-SHA256 signature. Every
delivery is a row: a receiver that fails is retried with backoff, then marked failed."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.core.errors import InvalidInput, NotAllowed
from apps.notifications import signing
from apps.notifications.models import Channel, Delivery, DeliveryStatus, Notification
from apps.notifications.services import configure_webhook, notify
from apps.notifications.tasks import deliver, retry_deliveries

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_0123456789abcdef"


class Receiver:
    """A webhook receiver on localhost that records what it is sent and answers `status`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *args: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    # A loopback address is refused unless allow-listed: this receiver is allow-listed.
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1"]
    with Receiver() as running:
        yield running


def tell(team: Team, users: list[User]) -> Notification:
    return notify(
        "promotion.requested",
        team=team,
        users=users,
        subject="[Plinth] ada asks to promote digits version 2 to champion",
        body="Why: better.\n",
        payload={"request": {"id": 7, "model": "digits", "version": 2, "alias": "champion"}},
    )


def send_all() -> list[str]:
    return [deliver(pk) for pk in Delivery.objects.order_by("id").values_list("pk", flat=True)]


def test_an_email_goes_to_each_person_with_an_address(team: Team, lin: User, lin2_no_email: User) -> None:
    note = tell(team, [lin, lin2_no_email, lin])
    assert [(d.channel, d.recipient) for d in note.deliveries.all()] == [(Channel.EMAIL, "lin@example.test")]
    assert send_all() == ["sent"]
    assert [(m.to, m.subject) for m in mail.outbox] == [(["lin@example.test"], note.subject)]
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_a_delivery_sent_twice_is_sent_once(team: Team, lin: User) -> None:
    tell(team, [lin])
    pk = Delivery.objects.get().pk
    assert (deliver(pk), deliver(pk)) == ("sent", "not due")
    assert len(mail.outbox) == 1


def test_the_webhook_gets_signed_json(team: Team, lin: User, receiver: Receiver) -> None:
    configure_webhook(lin, team, url=receiver.url, secret=SECRET)
    note = tell(team, [lin])
    assert sorted(d.channel for d in note.deliveries.all()) == [Channel.EMAIL, Channel.WEBHOOK]
    assert send_all() == ["sent", "sent"]
    [call] = receiver.calls
    headers, body = call["headers"], call["body"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Plinth-Event"] == "promotion.requested"
    # The documented scheme, computed here without Plinth's code: sha256=HMAC(secret, "<ts>.<body>").
    stamp = headers["X-Plinth-Timestamp"]
    assert stamp.isdigit() and abs(int(stamp) - time.time()) < signing.TOLERANCE_SECONDS
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Plinth-Signature"] == f"sha256={expected}"
    # The reference receiver accepts it too.
    assert signing.verify(SECRET, stamp, body, headers["X-Plinth-Signature"])
    sent = json.loads(body)
    assert (sent["event"], sent["id"], sent["request"]["model"]) == ("promotion.requested", note.pk, "digits")
    # What a receiver must refuse: another body, another secret, an old timestamp.
    assert not signing.verify(SECRET, headers["X-Plinth-Timestamp"], body + b" ", headers["X-Plinth-Signature"])
    assert not signing.verify(
        "whsec_other_secret_000", headers["X-Plinth-Timestamp"], body, headers["X-Plinth-Signature"]
    )
    late = float(headers["X-Plinth-Timestamp"]) + signing.TOLERANCE_SECONDS + 1
    assert not signing.verify(SECRET, headers["X-Plinth-Timestamp"], body, headers["X-Plinth-Signature"], now=late)


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(
    team: Team, lin: User, receiver: Receiver, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PLINTH_NOTIFY_MAX_ATTEMPTS = 3
    monkeypatch.setattr("apps.core.retry.jitter", lambda: 1.0)  # each wait at the top of its window
    later: list[int] = []
    monkeypatch.setattr(deliver, "apply_async", lambda args, countdown: later.append(countdown))
    configure_webhook(lin, team, url=receiver.url, secret=SECRET)
    notify("alias.changed_outside", team=team, users=[], subject="s", body="b", payload={})
    hook = Delivery.objects.get(channel=Channel.WEBHOOK)
    receiver.status = 500
    assert deliver(hook.pk) == "retry"
    hook.refresh_from_db()
    assert (hook.status, hook.attempts, "500" in hook.last_error) == (DeliveryStatus.PENDING, 1, True)
    assert hook.next_attempt_at > timezone.now() + timedelta(seconds=25)
    assert deliver(hook.pk) == "not due"  # the backoff holds
    for attempt in (2, 3):
        Delivery.objects.filter(pk=hook.pk).update(next_attempt_at=timezone.now())
        assert deliver(hook.pk) == ("retry" if attempt < 3 else "failed")
    assert later == [30, 60]
    hook.refresh_from_db()
    assert (hook.status, hook.attempts) == (DeliveryStatus.FAILED, 3)
    assert len(receiver.calls) == 3


def test_the_reconciler_sends_what_is_due_and_what_a_dead_worker_left(
    team: Team, lin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    tell(team, [lin])
    tell(team, [lin])
    first, second = Delivery.objects.order_by("id")
    Delivery.objects.filter(pk=second.pk).update(
        status=DeliveryStatus.SENDING, lease_until=timezone.now() - timedelta(seconds=1)
    )
    sent: list[int] = []
    monkeypatch.setattr(deliver, "delay", lambda pk: sent.append(pk))
    assert retry_deliveries() == 2
    assert sorted(sent) == [first.pk, second.pk]
    assert deliver(second.pk) == "sent"


def test_an_email_backend_failure_is_retried(
    team: Team, lin: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliver, "apply_async", lambda args, countdown: None)
    settings.EMAIL_BACKEND = "tests.notifications.test_notifications.BrokenBackend"
    tell(team, [lin])
    assert send_all() == ["retry"]
    assert "mail server down" in Delivery.objects.get().last_error


class BrokenBackend:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send_messages(self, messages: Any) -> int:
        raise ConnectionRefusedError("mail server down")


def test_only_leads_configure_the_webhook_and_it_is_audited(team: Team, lin: User, ada: User) -> None:
    with pytest.raises(NotAllowed):
        configure_webhook(ada, team, url="https://hooks.example.test/x")
    with pytest.raises(InvalidInput):
        configure_webhook(lin, team, url="ftp://hooks.example.test/x")
    hook, made = configure_webhook(lin, team, url="https://hooks.example.test/x")
    assert made.startswith("whsec_") and hook.secret == made  # made here: shown once
    again, shown = configure_webhook(lin, team, url="https://hooks.example.test/y")
    assert (again.secret, shown) == (made, "")  # an empty secret keeps the current one
    events = AuditEvent.objects.filter(verb="team.webhook_configured").order_by("id")
    assert [e.after["url"] for e in events if e.after] == [
        "https://hooks.example.test/x",
        "https://hooks.example.test/y",
    ]
    assert all(made not in json.dumps(e.after) for e in events)  # the secret never reaches the audit log


def test_the_webhook_page_shows_a_made_secret_once(team: Team, lin: User, ada: User) -> None:
    from tests.conftest import client_for

    assert client_for(ada).get("/models/teams/demo/webhook/").status_code == 403
    browser = client_for(lin)
    response = browser.post("/models/teams/demo/webhook/", {"url": "https://hooks.example.test/p", "is_active": "on"})
    assert response.status_code == 302  # post/redirect/get: a reload cannot post again
    response = browser.get(response["Location"])
    secret = response.context["shown_secret"]
    assert secret.startswith("whsec_") and secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    page = browser.get("/models/teams/demo/webhook/").content.decode()
    # No run of 6 characters of it but the fixed prefix "whsec_": not even its start.
    assert not [secret[i : i + 6] for i in range(1, len(secret) - 5) if secret[i : i + 6] in page]


@pytest.fixture
def lin2_no_email(team: Team) -> User:
    from apps.access.roles import Role
    from apps.accounts.models import Membership
    from tests.conftest import make_user

    user = make_user("quiet")
    User.objects.filter(pk=user.pk).update(email="")
    user.refresh_from_db()
    Membership.objects.create(team=team, user=user, role=Role.LEAD)
    return user


def test_timestamps_in_signatures_are_whole_seconds() -> None:
    stamp = str(int(time.time()))
    # A signature made by hand to the documented scheme is accepted; a non-numeric stamp is not.
    by_hand = "sha256=" + hmac.new(SECRET.encode(), f"{stamp}.{{}}".encode(), hashlib.sha256).hexdigest()
    assert signing.sign(SECRET, stamp, b"{}") == by_hand
    assert signing.verify(SECRET, stamp, b"{}", by_hand)
    assert not signing.verify(SECRET, "not-a-number", b"{}", by_hand)

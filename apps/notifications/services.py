"""Every change to notifications: queueing a notification (a row per delivery, sent by a
task after commit), configuring a team's webhook and rotating its secret, and sending one
delivery. Webhook URLs go through apps.core.outbound both when saved and when called."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.access import policies
from apps.accounts.models import Team, User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core import outbound
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.core.retry import RetryPolicy
from apps.notifications import signing
from apps.notifications.models import Channel, Delivery, DeliveryStatus, Notification, TeamWebhook

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)


def retry_policy() -> RetryPolicy:
    """Waits below 30 s, 60 s, 120 s, ... at most an hour (jittered), so a receiver down for
    a while still gets it; PLINTH_NOTIFY_MAX_ATTEMPTS tries in all."""
    return RetryPolicy(
        base=settings.PLINTH_NOTIFY_RETRY_SECONDS, cap=3600, attempts=settings.PLINTH_NOTIFY_MAX_ATTEMPTS
    )


def absolute_url(path: str) -> str:
    """Links in emails and webhooks need the portal's public address."""
    base = str(settings.PLINTH_BASE_URL).rstrip("/")
    return f"{base}{path}"


def notify(
    verb: str,
    *,
    team: Team | None,
    users: Iterable[User],
    subject: str,
    body: str,
    payload: dict[str, Any],
    webhook: bool = True,
) -> Notification:
    """Queue a notification: an email to each of `users` that has an address, and a call of
    the team's webhook when it has an active one. Call it inside the transaction of the
    change it reports: the deliveries commit with it and are sent after the commit."""
    notification = Notification.objects.create(
        verb=verb, team=team, subject=subject[:200], body=body, payload={"event": verb, **payload}
    )
    deliveries: list[Delivery] = []
    seen: set[str] = set()
    for user in users:
        address = (user.email or "").strip()
        if address and user.is_active and address.lower() not in seen:
            seen.add(address.lower())
            deliveries.append(Delivery(notification=notification, channel=Channel.EMAIL, recipient=address, user=user))
    if webhook and team is not None:
        hook = TeamWebhook.objects.filter(team=team, is_active=True).first()
        if hook is not None:
            deliveries.append(Delivery(notification=notification, channel=Channel.WEBHOOK, recipient=hook.url))
    for delivery in deliveries:
        delivery.save()  # one by one: the primary keys are needed on every database
        from apps.notifications.tasks import deliver

        enqueue_on_commit(deliver, delivery.pk)
    return notification


@transaction.atomic(durable=True)
def configure_webhook(
    actor: User, team: Team, *, url: str, secret: str = "", is_active: bool = True
) -> tuple[TeamWebhook, str]:
    """Set the team's webhook (leads, platform admins). An empty `secret` keeps the current
    one, or makes a new one for a first webhook. Returns the row and the secret when Plinth
    made it (to be shown once), else "".

    The URL must be http(s) without credentials, and its host must not resolve to a loopback,
    private, link-local, metadata or other non-public address unless a platform admin
    allow-listed it (`PLINTH_OUTBOUND_ALLOWED_HOSTS`; the rule is apps.core.outbound's).
    Raises NotAllowed (403), InvalidInput (400) naming the refused address and why."""
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins configure its webhook.")
    try:
        url = outbound.validate_url(url or "")
    except outbound.RefusedURL as exc:
        raise InvalidInput.field("url", webhook_refusal(exc)) from exc
    hook = TeamWebhook.objects.select_for_update().filter(team=team).first()
    before = {"url": hook.url, "is_active": hook.is_active} if hook else None
    made = "" if secret or hook is not None else signing.new_secret()
    if hook is None:
        hook = TeamWebhook(team=team, secret=secret or made)
    elif secret:
        hook.secret = secret
    if len(hook.secret) < 16:
        raise InvalidInput.field("secret", "Use a secret of at least 16 characters (or leave it empty for a new one).")
    hook.url, hook.is_active, hook.updated_by, hook.updated_at = url, is_active, actor, timezone.now()
    if secret or made:
        hook.secret_set_at = hook.updated_at
    hook.save()
    after = {"url": hook.url, "is_active": hook.is_active, "secret_changed": bool(secret or made)}
    record(actor, AuditVerb.TEAM_WEBHOOK_CONFIGURED, hook, team=team, before=before, after=after)
    return hook, made


def webhook_refusal(exc: outbound.RefusedURL) -> str:
    """The sentence a lead reads when a webhook URL is refused."""
    hint = " Ask a platform admin to allow-list the host if it is meant." if "resolves to" in exc.reason else ""
    return f"The webhook URL {exc.reason}.{hint}"


@transaction.atomic(durable=True)
def rotate_webhook_secret(actor: User, team: Team) -> tuple[TeamWebhook, str]:
    """Replace the team's webhook secret with a new one Plinth makes (leads, platform admins).
    Returns the row and the new secret, to be shown once. The audit event records the
    rotation, never the secret. Raises NotAllowed (403), Conflict (409) with no webhook."""
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins rotate its webhook secret.")
    hook = TeamWebhook.objects.select_for_update().filter(team=team).first()
    if hook is None:
        raise Conflict("The team has no webhook yet: add one first.")
    made = signing.new_secret()
    now = timezone.now()
    hook.secret, hook.secret_set_at, hook.updated_by, hook.updated_at = made, now, actor, now
    hook.save(update_fields=["secret", "secret_set_at", "updated_by", "updated_at"])
    record(actor, AuditVerb.TEAM_WEBHOOK_SECRET_ROTATED, hook, team=team, after={"secret_set_at": now.isoformat()})
    return hook, made


# -- sending ----------------------------------------------------------------------------
def claim(delivery_pk: int) -> Delivery | None:
    """pending (and due) → sending, or a `sending` row whose claimant vanished. None when
    another worker has it, it is not due yet, or it is done."""
    now = timezone.now()
    claimed = (
        Delivery.objects.filter(pk=delivery_pk, next_attempt_at__lte=now)
        .filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING])
        .exclude(status=DeliveryStatus.SENDING, lease_until__gt=now)
        .update(status=DeliveryStatus.SENDING, lease_until=now + LEASE, attempts=F("attempts") + 1, updated_at=now)
    )
    if not claimed:
        return None
    return Delivery.objects.select_related("notification__team").get(pk=delivery_pk)


def _send_email(delivery: Delivery) -> None:
    note = delivery.notification
    EmailMessage(note.subject, note.body, settings.DEFAULT_FROM_EMAIL, [delivery.recipient]).send()


def _send_webhook(delivery: Delivery) -> None:
    note = delivery.notification
    hook = TeamWebhook.objects.filter(team=note.team, is_active=True).first() if note.team_id else None
    if hook is None:
        raise RuntimeError("the team's webhook was removed or switched off")
    body = json.dumps(
        {"id": note.pk, "delivery": delivery.pk, "created_at": note.created_at, **note.payload},
        cls=DjangoJSONEncoder,
        sort_keys=True,
    ).encode()
    timestamp = str(int(time.time()))
    reply = outbound.post(
        hook.url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Plinth-Webhook/1",
            "X-Plinth-Event": note.verb,
            "X-Plinth-Delivery": str(delivery.pk),
            "X-Plinth-Timestamp": timestamp,
            "X-Plinth-Signature": signing.sign(hook.secret, timestamp, body),
        },
        timeout=float(settings.PLINTH_WEBHOOK_TIMEOUT),
    )
    if not 200 <= reply.status < 300:
        raise RuntimeError(f"the webhook answered {reply.status}")


def send(delivery: Delivery) -> tuple[str, int | None]:
    """Send a claimed delivery; record the outcome. Returns ("sent" | "retry" | "failed",
    seconds until the next attempt for "retry"). A webhook URL refused by apps.core.outbound
    (a non-public address, a redirect) fails at once with the reason: no retry changes it."""
    refused = False
    try:
        if delivery.channel == Channel.EMAIL:
            _send_email(delivery)
        else:
            _send_webhook(delivery)
    except outbound.RefusedURL as exc:
        refused, reason = True, f"Refused: {webhook_refusal(exc)}"[:1000]
    except Exception as exc:  # any failure of the receiver is recorded and retried
        reason = f"{type(exc).__name__}: {exc}"[:1000]
    else:
        reason = ""
    if reason:
        now = timezone.now()
        policy = retry_policy()
        if refused or policy.exhausted(delivery.attempts):
            Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
                status=DeliveryStatus.FAILED, last_error=reason, lease_until=None, updated_at=now
            )
            logger.warning("notification delivery %s failed for good: %s", delivery.pk, reason)
            return "failed", None
        delay = policy.delay(delivery.attempts)
        Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.PENDING,
            last_error=reason,
            lease_until=None,
            next_attempt_at=now + timedelta(seconds=delay),
            updated_at=now,
        )
        return "retry", delay
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT, sent_at=now, last_error="", lease_until=None, updated_at=now
    )
    return "sent", None

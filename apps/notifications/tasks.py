"""Celery tasks of notifications: send one delivery (idempotent: it claims the row first),
and the periodic reconciler that sends what is due again."""

from __future__ import annotations

from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from apps.notifications import services
from apps.notifications.models import Delivery, DeliveryStatus


@shared_task(acks_late=True)
def deliver(delivery_pk: int) -> str:
    """Send one delivery. A second copy of the message finds the row claimed or sent and
    does nothing; a failure is retried later (with backoff) by this task or the reconciler."""
    delivery = services.claim(delivery_pk)
    if delivery is None:
        return "not due"
    outcome, delay = services.send(delivery)
    if outcome == "retry" and delay is not None:
        deliver.apply_async((delivery_pk,), countdown=delay)
    return outcome


@shared_task
def retry_deliveries(limit: int = 500) -> int:
    """Beat: resend deliveries that are due (their message was lost, or their backoff has
    passed) and those left `sending` by a worker that died."""
    now = timezone.now()
    due = Delivery.objects.filter(
        Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        | Q(status=DeliveryStatus.SENDING, lease_until__lt=now)
    ).values_list("pk", flat=True)[:limit]
    sent = 0
    for pk in due:
        deliver.delay(pk)
        sent += 1
    return sent

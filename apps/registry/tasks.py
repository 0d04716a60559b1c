"""Celery tasks of the registry. `apply_promotion` takes a primary key and is safe to run
twice (see apps.registry.applying); two periodic reconcilers (beat) expire requests,
resend applies whose message was lost or whose backoff has passed, and record drift."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from apps.registry import applying, drift, services
from apps.registry.mlflow import MlflowUnavailable
from apps.registry.models import IN_FLIGHT, PromotionRequest, Status

logger = logging.getLogger(__name__)

# An approved request whose task has not claimed it for this long lost its message.
STALE_APPROVED = timedelta(seconds=30)


@shared_task(acks_late=True)
def apply_promotion(request_pk: int) -> str:
    """One attempt at moving the alias; MLflow unreachable → the same task again after a
    backoff (5 s, 10 s, 20 s, ...), then `failed` with the reason."""
    outcome = applying.apply(request_pk)
    if outcome.retry_in is not None:
        apply_promotion.apply_async((request_pk,), countdown=outcome.retry_in)
    return outcome.text


@shared_task
def reconcile_promotions() -> dict[str, int]:
    """Beat (every 30 s): expire pending requests past their expiry, and send the apply
    task again for the head of each alias's queue when nobody is on it (a lost message, a
    worker that died holding the lease, a retry whose backoff has passed)."""
    now = timezone.now()
    counts = {"expired": services.expire_due(), "sent": 0}
    claimable = (
        Q(status=Status.APPROVED, updated_at__lt=now - STALE_APPROVED)
        | Q(status=Status.APPLYING, lease_token="", next_attempt_at__lte=now)
        | Q(status=Status.APPLYING, lease_token="", next_attempt_at__isnull=True)
        | Q(status=Status.APPLYING, lease_until__lt=now)
    )
    queues = PromotionRequest.objects.filter(status__in=IN_FLIGHT).values_list("model_id", "alias").distinct()
    for model_id, alias in queues:
        head = applying.queue_head(model_id, alias)
        if head is not None and PromotionRequest.objects.filter(pk=head.pk).filter(claimable).exists():
            apply_promotion.delay(head.pk)
            counts["sent"] += 1
    return counts


@shared_task
def reconcile_aliases() -> dict[str, int]:
    """Beat (every 60 s): record aliases changed directly in MLflow (see apps.registry.drift)."""
    try:
        return drift.reconcile()
    except MlflowUnavailable as exc:
        logger.warning("alias reconciler: %s", exc.message)
        return {"unavailable": 1}

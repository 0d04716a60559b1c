"""Celery tasks of deployments. `reconcile_deployment(pk)` makes the serving backend match a
deployment's intent rows (revisions, traffic, deletion) one step further; it takes the
primary key only and is safe to run twice at once (apps.deployments.rollout). The periodic
`reconcile_deployments` (beat) passes over every deployment, so a lost message, a crashed
worker or a model server that died is repaired within a period."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from apps.deployments import rollout
from apps.deployments.models import Deployment

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def reconcile_deployment(deployment_pk: int) -> str:
    """Bring deployment `deployment_pk` one step closer to its intent; returns what it did.
    While a rollout is in flight the task sends itself again for when the next step is due
    (rollout.next_pass_in: a starting revision every 2 s, a canary at its end), so a rollout
    does not wait for beat's period at every step; beat's pass repairs a lost message."""
    done = rollout.reconcile(deployment_pk)
    delay = rollout.next_pass_in(deployment_pk)
    # Eagerly run tasks (tests) would run the next pass at once, and again: no chain there.
    if delay is not None and not reconcile_deployment.app.conf.task_always_eager:
        try:
            reconcile_deployment.apply_async((deployment_pk,), countdown=delay, expires=delay + 300)
        except Exception:  # the broker is down: beat's periodic pass carries on
            logger.warning("could not send the next pass of deployment %s", deployment_pk, exc_info=True)
    return done


@shared_task
def reconcile_deployments() -> dict[str, int]:
    """Beat (every PLINTH_DEPLOYMENT_SYNC_SECONDS): one pass over every deployment, one at a
    time across all workers (apps.core.leases; a pass that finds another running returns
    {"skipped": 1}). A deployment whose pass fails is logged and the others go on."""
    from apps.core.leases import single_pass

    with single_pass("reconcile_deployments", float(settings.PLINTH_DEPLOYMENT_SYNC_SECONDS)) as mine:
        if not mine:
            return {"skipped": 1}
        counts = {"deployments": 0, "failed": 0}
        for pk in Deployment.objects.order_by("pk").values_list("pk", flat=True):
            counts["deployments"] += 1
            try:
                rollout.reconcile(pk)
            except Exception:  # one broken deployment must not stop the others' supervision
                counts["failed"] += 1
                logger.exception("deployment %s: reconcile pass failed", pk)
        return counts

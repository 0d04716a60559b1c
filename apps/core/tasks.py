from __future__ import annotations

import socket

from celery import shared_task
from django.utils import timezone

from apps.core.models import WorkerHeartbeat


@shared_task(bind=True)
def heartbeat(self: object) -> str:
    """Record that a worker on this host is alive (scheduled by beat, sent by the status page)."""
    hostname = getattr(getattr(self, "request", None), "hostname", None) or socket.gethostname()
    WorkerHeartbeat.objects.update_or_create(hostname=hostname, defaults={"seen_at": timezone.now()})
    return hostname

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


@shared_task
def prune_broker_messages() -> int:
    """Delete the messages the embedded broker has already handed out; returns how many.

    kombu's SQLAlchemy transport marks a delivered message invisible instead of deleting
    it, and never hands an invisible one out again, so they only grow the file. A no-op
    (0) on any other broker."""
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if not url.startswith("sqla+"):
        return 0
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.removeprefix("sqla+"), connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            inspector = sqlalchemy.inspect(conn)
            if not inspector.has_table("kombu_message"):
                return 0
            result = conn.execute(sqlalchemy.text("DELETE FROM kombu_message WHERE visible = :no"), {"no": False})
            return int(result.rowcount or 0)
    finally:
        engine.dispose()

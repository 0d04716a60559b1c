"""Checks of the parts Plinth depends on: `readiness` for /readyz (can this process serve?),
`system_status` for the status page and `/readyz?full=1` (is everything up?)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    millis: int = 0
    required: bool = True


def _timed(name: str, fn: object, required: bool = True) -> Check:
    start = time.monotonic()
    try:
        detail = fn()  # type: ignore[operator]
        ok = True
    except Exception as exc:  # a check reports, it never raises
        detail = str(exc) or type(exc).__name__
        ok = False
    return Check(name, ok, str(detail), int((time.monotonic() - start) * 1000), required)


def check_database() -> Check:
    def run() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return f"{connection.vendor} answered"

    return _timed("database", run)


def _broker_label() -> str:
    url = settings.CELERY_BROKER_URL
    return url.split("@")[-1] if "@" in url else url


def check_broker() -> Check:
    def run() -> str:
        from portal.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        return f"{_broker_label()} reachable"

    return _timed("broker", run)


def check_worker() -> Check:
    def run() -> str:
        from apps.core.models import WorkerHeartbeat

        stale = timezone.now() - timedelta(seconds=settings.PLINTH_WORKER_STALE_SECONDS)
        latest = WorkerHeartbeat.objects.order_by("-seen_at").first()
        if latest is None:
            raise RuntimeError("No worker has ever answered. Is `celery worker` running?")
        if latest.seen_at < stale:
            raise RuntimeError(f"No worker answered since {latest.seen_at:%Y-%m-%d %H:%M:%S} UTC ({latest.hostname}).")
        alive = WorkerHeartbeat.objects.filter(seen_at__gte=stale).count()
        return f"{alive} worker(s) answered; last {latest.hostname} at {latest.seen_at:%H:%M:%S} UTC"

    return _timed("worker", run, required=False)


def check_mlflow() -> Check:
    def run() -> str:
        from apps.tracking.gateway import gateway

        gw = gateway()
        gw.ping()
        return f"{gw.base_url} answered"

    return _timed("mlflow", run)


def check_cluster() -> Check:
    def run() -> str:
        from apps.compute.cluster import cluster_status

        return cluster_status()

    return _timed("cluster", run, required=False)


def check_reconciler() -> Check:
    """How long the last `sync_launches` pass took against its period (apps.core.leases):
    "attention" when it or another reconciler's last pass took longer than its period, or
    no pass has finished yet."""

    def run() -> str:
        from apps.core.models import ReconcilerPass

        row = ReconcilerPass.objects.filter(name="sync_launches").first()
        if row is None or row.last_duration_seconds is None:
            raise RuntimeError("No reconciler pass has finished yet. Is `celery beat` running?")
        took = f"last reconciler pass took {row.last_duration_seconds:.1f} s (every {row.period_seconds:g} s"
        took += f", finished {row.last_finished_at:%H:%M:%S} UTC; {row.skipped} skipped while one ran)"
        if row.too_slow:
            raise RuntimeError(f"{took}: slower than its period, so launches update late")
        slow = [r for r in ReconcilerPass.objects.exclude(name="sync_launches") if r.too_slow]
        if slow:
            names = ", ".join(f"{r.name} ({r.last_duration_seconds:.1f} s, every {r.period_seconds:g} s)" for r in slow)
            raise RuntimeError(f"{took}; slower than their period: {names}")
        return took

    return _timed("reconciler", run, required=False)


def check_kube_rate_limit() -> Check:
    """Which Kubernetes API rate limit applies: shared by all processes, or per process."""

    def run() -> str:
        from apps.compute.k8s.ratelimit import limiter_mode, shared_limiter

        return limiter_mode(shared_limiter())

    return _timed("cluster rate limit", run, required=False)


def readiness() -> list[Check]:
    """What decides whether this web process gets traffic: only what it needs to serve a
    page (the database). MLflow, the broker and the cluster being down show on pages as
    banners and 503s; taking every web pod out of the Service for them would turn a
    partial outage into a full one."""
    return [check_database()]


def system_status() -> list[Check]:
    """Everything Plinth depends on, for the status page and `/readyz?full=1`."""
    return [
        check_database(),
        check_broker(),
        check_worker(),
        check_mlflow(),
        check_cluster(),
        check_reconciler(),
        check_kube_rate_limit(),
    ]

from __future__ import annotations

from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """The last time a Celery worker ran the heartbeat task: how the status page knows a
    worker is alive on brokers without remote control (the embedded SQLite broker)."""

    hostname = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%H:%M:%S}"


class ReconcilerPass(models.Model):
    """One row per periodic reconciler (e.g. `sync_launches`): the lease that lets one pass
    run at a time across every worker process and host, and how long the last pass took,
    for the status page. Claimed and released with conditional UPDATEs (apps.core.leases)."""

    name = models.CharField(max_length=100, unique=True)
    holder = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    period_seconds = models.FloatField(default=0)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_duration_seconds = models.FloatField(null=True, blank=True)
    skipped = models.PositiveIntegerField(default=0)  # passes that found the lease taken

    def __str__(self) -> str:
        return self.name

    @property
    def running(self) -> bool:
        """A pass holds the lease now (it started and has not released it)."""
        return bool(self.holder) and self.lease_until is not None and self.lease_until > timezone.now()

    @property
    def too_slow(self) -> bool:
        """The last pass took longer than the period it runs at: passes queue up behind it."""
        return bool(self.period_seconds and (self.last_duration_seconds or 0) > self.period_seconds)

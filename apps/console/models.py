"""Where each project's access stands outside Plinth: in the cluster (namespace, role
bindings, GPU quota, Kueue queue) and in MLflow (experiment and model permissions)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.projects.models import Project


class SyncTarget(models.TextChoices):
    CLUSTER = "cluster", "Kubernetes"
    MLFLOW = "mlflow", "MLflow"


class SyncStatus(models.TextChoices):
    PENDING = "pending", "Not synced yet"
    IN_SYNC = "in_sync", "In sync"
    REPAIRED = "repaired", "Drift repaired"
    ERROR = "error", "Failed"


class SyncState(models.Model):
    """The last pass of one sync (a target) for one project: what it found and did.

    `applied` is what the last successful pass made the target look like (the desired
    state as Plinth computed it), so the next pass can tell drift — the target changed
    while Plinth's intent did not — from an ordinary change made in Plinth. `drift` lists
    the differences the last pass found and repaired."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="access_syncs")
    target = models.CharField(max_length=16, choices=SyncTarget.choices)
    status = models.CharField(max_length=16, choices=SyncStatus.choices, default=SyncStatus.PENDING)
    message = models.CharField(max_length=500, blank=True)
    drift = models.JSONField(default=list, blank=True)
    applied = models.JSONField(default=dict, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    repaired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project_id", "target"]
        constraints = [models.UniqueConstraint(fields=["project", "target"], name="one_sync_state_per_target")]

    def __str__(self) -> str:
        return f"{self.project_id} {self.target}: {self.status}"

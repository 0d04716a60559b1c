"""Append-only audit events: who did what to which object, from where, when."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.access.roles import Action
from apps.audit.verbs import AuditVerb


class AppendOnlyError(RuntimeError):
    pass


class AuditEventQuerySet(ScopedQuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("Audit events are append-only")

    def delete(self) -> NoReturn:  # type: ignore[override]
        raise AppendOnlyError("Audit events are append-only")


class AuditEvent(models.Model):
    """One recorded change. Written by services only (apps.audit.services.record); there is
    no update or delete path in code, in the API or in the Django admin."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # PROTECT: people with a history are deactivated, never deleted.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=150)
    # Choices, not a constraint: rows keep whatever verb they were written with.
    verb = models.CharField(max_length=64, db_index=True, choices=AuditVerb.choices)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_label = models.CharField(max_length=200, blank=True)
    # Plain ids plus labels, not foreign keys: the record outlives what it describes.
    team_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    team_label = models.CharField(max_length=64, blank=True)
    project_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    project_label = models.CharField(max_length=130, blank=True)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()
    # Platform admins see every event; leads see their teams' events, whatever was asked.
    access_scope = TeamScope("team_id", action=Action.MANAGE)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team_id", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.verb} {self.target_label}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise AppendOnlyError("Audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("Audit events are append-only")

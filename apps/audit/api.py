from __future__ import annotations

from typing import Any

from rest_framework import mixins

from apps.access import policies
from apps.access.mixins import ScopedViewSet
from apps.audit.filters import AuditFilter
from apps.audit.models import AuditEvent
from apps.audit.serializers import AuditEventSerializer
from apps.audit.views import visible_events


class AuditEventViewSet(mixins.ListModelMixin, ScopedViewSet):
    """The audit log (read-only): platform admins see all, leads their teams' events."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer

    filterset_class = AuditFilter

    def get_queryset(self) -> Any:
        return visible_events(self.request.user)

    policy = staticmethod(policies.can_view_audit)
    denied = "The audit log is for team leads and platform admins."

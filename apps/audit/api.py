from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.request import Request
from rest_framework.response import Response

from apps.access import policies
from apps.access.mixins import ScopedViewSet
from apps.audit.models import AuditEvent
from apps.audit.serializers import AuditEventSerializer
from apps.audit.views import FILTERS, filtered_events


class AuditEventViewSet(mixins.ListModelMixin, ScopedViewSet):
    """The audit log (read-only): platform admins see all, leads their teams' events."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer

    def get_queryset(self) -> Any:
        return filtered_events(self.request.user, self.request.query_params)

    @extend_schema(parameters=[OpenApiParameter(p, str) for p in FILTERS])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not policies.can_view_audit(request.user):
            raise PermissionDenied("The audit log is for team leads and platform admins.")
        return super().list(request, *args, **kwargs)

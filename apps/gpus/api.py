"""API: GET /api/v1/gpus/ (the fleet, scoped) and GET /api/v1/gpus/usage/ (GPU-hours)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.access import policies
from apps.access.mixins import ScopedViewSet
from apps.core.errors import InvalidInput
from apps.gpus import usage
from apps.gpus.models import Gpu, conf
from apps.gpus.selectors import usage_teams


class GpuSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    memory_total = serializers.IntegerField(source="memory_total_mib", help_text="MiB")
    memory_used = serializers.IntegerField(source="memory_used_mib", allow_null=True, help_text="MiB")
    allocated_to = serializers.SerializerMethodField()

    class Meta:
        model = Gpu
        fields = [
            "node",
            "index",
            "uuid",
            "model",
            "memory_total",
            "allocated_to",
            "utilization",
            "memory_used",
            "power_w",
            "engine_active",
            "sampled_at",
            "schedulable",
            "sources",
        ]

    def get_allocated_to(self, gpu: Gpu) -> dict[str, Any] | None:
        if not gpu.allocated:
            return None
        launch = gpu.launch
        return {
            "launch": gpu.launch_id,
            "user": launch.created_by.username if launch is not None else None,
            "project": gpu.project.full_slug if gpu.project is not None else None,
            "team": gpu.team.slug if gpu.team is not None else None,
            "namespace": gpu.namespace,
            "pod": gpu.pod,
        }


class GpuViewSet(mixins.ListModelMixin, ScopedViewSet):
    """The GPU fleet as the last sampler pass saw it. Platform admins see every GPU; others
    see free GPUs and their teams' GPUs. Filters: ?node= ?model= ?allocated=true|false."""

    queryset = Gpu.objects.present()
    serializer_class = GpuSerializer

    def get_queryset(self) -> Any:
        gpus = (
            super()
            .get_queryset()
            .select_related("launch__created_by", "project__team", "team")
            .order_by("node", "index")
        )
        params = self.request.query_params
        if node := params.get("node"):
            gpus = gpus.filter(node=node)
        if model := params.get("model"):
            gpus = gpus.filter(model=model)
        if params.get("allocated") in ("true", "false"):
            gpus = gpus.filter(allocated=params["allocated"] == "true")
        return gpus

    @extend_schema(
        parameters=[
            OpenApiParameter("node", str),
            OpenApiParameter("model", str),
            OpenApiParameter("allocated", bool),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)


class UsageGroupSerializer(serializers.Serializer):  # type: ignore[type-arg]
    group = serializers.CharField()
    team = serializers.CharField()
    project = serializers.CharField()
    gpu_hours_allocated = serializers.FloatField()
    gpu_hours_used = serializers.FloatField()
    gpu_hours_measured = serializers.FloatField(help_text="allocated hours that had a utilization reading")
    utilization_percent = serializers.FloatField(allow_null=True)
    cost = serializers.CharField(allow_null=True)


class UsageReportSerializer(serializers.Serializer):  # type: ignore[type-arg]
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.ChoiceField(choices=usage.GROUPS)
    currency = serializers.CharField()
    groups = UsageGroupSerializer(many=True)
    total = UsageGroupSerializer()


def parse_when(name: str, value: str, default: datetime) -> datetime:
    """An ISO date (midnight, local time) or date-time; 400 naming the parameter otherwise."""
    if not value:
        return default
    moment = parse_datetime(value)
    if moment is None:
        day: date | None = None
        try:
            day = parse_date(value)
        except ValueError:
            day = None
        if day is None:
            raise InvalidInput.field(name, "Use an ISO date (2025-01-31) or date-time (2025-01-31T12:00:00Z).")
        moment = datetime.combine(day, time.min)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


class UsageView(APIView):
    """GPU-hours allocated and used per team or project over [start, end) (default: the last
    30 days), with cost where the GPU model has a price. Leads: their teams; platform
    admins: every team, plus pods outside Plinth's projects (group "ns:<namespace>")."""

    @extend_schema(
        parameters=[
            OpenApiParameter("group_by", str, enum=list(usage.GROUPS)),
            OpenApiParameter("start", str, description="ISO date or date-time (default: 30 days ago)"),
            OpenApiParameter("end", str, description="ISO date or date-time, exclusive (default: now)"),
            OpenApiParameter("team", str, description="one team's slug"),
        ],
        responses=UsageReportSerializer,
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        group_by = params.get("group_by") or "team"
        if group_by not in usage.GROUPS:
            raise InvalidInput.field("group_by", "Group by team or project.")
        teams, team = usage_teams(request.user, params.get("team", ""))
        now = timezone.now()
        end = parse_when("end", params.get("end", ""), now)
        start = parse_when("start", params.get("start", ""), end - timedelta(days=30))
        if start >= end:
            raise InvalidInput.field("start", "The period must start before it ends.")
        period = usage.Period.of(start, end, now)
        admin = policies.is_platform_admin(request.user)
        rows = usage.usage_report(period, group_by, teams, include_foreign=admin, team=team)
        body = {
            "start": period.start,
            "end": period.end,
            "group_by": group_by,
            "currency": str(conf("PLINTH_GPU_PRICE_CURRENCY", "USD")),
            "groups": [row.as_dict() for row in rows],
            "total": usage.sum_rows(rows).as_dict(),
        }
        return Response(UsageReportSerializer(body).data)

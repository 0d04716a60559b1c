"""API: GET /api/v1/gpus/ (the fleet, scoped) and GET /api/v1/gpus/usage/ (GPU-hours)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.access import policies
from apps.access.mixins import ScopedViewSet
from apps.core.filters import errors_of, form_parameters
from apps.gpus import usage
from apps.gpus.filters import GpuFilter, UsageQuery
from apps.gpus.models import Gpu
from apps.gpus.selectors import usage_teams


class GpuSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    memory_total = serializers.IntegerField(source="memory_total_mib", help_text="MiB")
    memory_used = serializers.IntegerField(source="memory_used_mib", allow_null=True, help_text="MiB")
    allocated_to = serializers.SerializerMethodField()
    # Deprecated alias of `product` (its name until this release); removed in the next one.
    model = serializers.CharField(
        source="product", read_only=True, help_text="Deprecated: use `product` (removed in the next release)."
    )

    class Meta:
        model = Gpu
        fields = [
            "node",
            "index",
            "uuid",
            "product",
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
    filterset_class = GpuFilter

    def get_queryset(self) -> Any:
        gpus = (
            super()
            .get_queryset()
            .select_related("launch__created_by", "project__team", "team")
            .order_by("node", "index")
        )
        return gpus


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


class UsageView(APIView):
    """GPU-hours allocated and used per team or project over [start, end) (default: the last
    30 days), with cost where the GPU product has a price. Leads: their teams; platform
    admins: every team, plus pods outside Plinth's projects (group "ns:<namespace>")."""

    @extend_schema(parameters=form_parameters(UsageQuery), responses=UsageReportSerializer)
    def get(self, request: Request) -> Response:
        query = UsageQuery(request.query_params)
        if not query.is_valid():
            usage_teams(request.user)  # 403 before a form error tells anything
            raise ValidationError(errors_of(query))
        teams, team = usage_teams(request.user, query.cleaned_data["team"])
        group_by, period = query.cleaned_data["group_by"], query.cleaned_data["period"]
        foreign = policies.can_see_foreign_usage(request.user)
        rows = usage.usage_report(period, group_by, teams, include_foreign=foreign, team=team)
        body = {
            "start": period.start,
            "end": period.end,
            "group_by": group_by,
            "currency": str(settings.PLINTH_GPU_PRICE_CURRENCY),
            "groups": [row.as_dict() for row in rows],
            "total": usage.sum_rows(rows).as_dict(),
        }
        return Response(UsageReportSerializer(body).data)

"""API: templates, launches (create, cancel, logs), sweeps."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.access.lookups import get_launch_for_user, get_sweep_for_user, get_team_for_user, get_template_for_user
from apps.access.mixins import ScopedViewSet
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.compute.registry import get_backend
from apps.core.api import int_param, int_schema
from apps.launches import services, sweeps
from apps.launches.filters import LaunchFilter, SweepFilter, TemplateFilter
from apps.launches.lookups import project_from, template_from
from apps.launches.models import Launch, Sweep, Template
from apps.launches.serializers import (
    LaunchCreateSerializer,
    LaunchSerializer,
    SweepCreateSerializer,
    SweepExtendSerializer,
    SweepInsightsSerializer,
    SweepSerializer,
    TemplateSerializer,
    TemplateUpdateSerializer,
    TemplateWriteSerializer,
)

# The most log lines one request reads (the backends read the tail of a file or a pod log).
MAX_TAIL = 10_000


class TemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    """Templates you can launch: global ones and your teams'. `?project=` narrows to one project's."""

    queryset = Template.objects.all()
    serializer_class = TemplateSerializer
    lookup_function = get_template_for_user

    filterset_class = TemplateFilter

    def get_queryset(self) -> Any:
        found = super().get_queryset().select_related("team", "environment__team")
        return found.filter(is_active=True).order_by("slug")

    @extend_schema(request=TemplateWriteSerializer, responses={201: TemplateSerializer})
    def create(self, request: Request) -> Response:
        body = TemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team_slug = data.pop("team", None)
        team = get_team_for_user(request.user, team_slug, Action.MANAGE) if team_slug else None
        template = services.create_template(actor_of(request), team, **data)
        return Response(TemplateSerializer(template).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TemplateUpdateSerializer, responses=TemplateSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        template = self.get_object()
        body = TemplateUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        template = services.update_template(actor_of(request), template, **body.validated_data)
        return Response(TemplateSerializer(template).data)


class LaunchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    """Launches of your teams' projects. Filters: ?project= ?status= ?user= ?sweep=."""

    queryset = Launch.objects.all()
    serializer_class = LaunchSerializer
    lookup_function = get_launch_for_user
    write_action = Action.LAUNCH
    depends_on = {"create": ("MLflow",), "logs": ("the cluster",)}  # the schema's 503 (apps.core.schema)

    filterset_class = LaunchFilter

    def get_queryset(self) -> Any:
        launches = super().get_queryset().select_related("project__team", "template", "created_by", "environment__team")
        return launches.order_by("-created_at", "-id")

    @extend_schema(request=LaunchCreateSerializer, responses={201: LaunchSerializer})
    def create(self, request: Request) -> Response:
        body = LaunchCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = project_from(request.user, data["project"], Action.LAUNCH)
        template = template_from(request.user, project, data["template"])
        launch = services.create_launch(
            actor_of(request),
            project,
            template,
            parameters=data["parameters"],
            resources=data["resources"],
            name=data["name"],
            environment=data["environment"] or None,
        )
        return Response(LaunchSerializer(launch).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=LaunchSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        launch = get_launch_for_user(request.user, pk, Action.LAUNCH)
        launch = services.cancel_launch(actor_of(request), launch)
        return Response(LaunchSerializer(launch).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("tail", int_schema(1, MAX_TAIL), description=f"last lines, 1..{MAX_TAIL} (default 200)")
        ],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: str) -> HttpResponse:
        launch = get_launch_for_user(request.user, pk, Action.VIEW)
        tail = int_param(request.query_params, "tail", 200, minimum=1, maximum=MAX_TAIL)
        text = get_backend(launch.backend).logs(launch, tail)
        return HttpResponse(text, content_type="text/plain; charset=utf-8")


class SweepViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    """Sweeps with their launches."""

    queryset = Sweep.objects.all()
    serializer_class = SweepSerializer
    lookup_function = get_sweep_for_user
    write_action = Action.LAUNCH
    depends_on = {"create": ("MLflow",), "insights": ("MLflow",)}

    filterset_class = SweepFilter

    def get_queryset(self) -> Any:
        found = super().get_queryset().select_related("project__team", "template", "created_by", "environment__team")
        return found.prefetch_related("trials").order_by("-created_at", "-id")

    @extend_schema(request=SweepCreateSerializer, responses={201: SweepSerializer})
    def create(self, request: Request) -> Response:
        body = SweepCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        project = project_from(request.user, data.pop("project"), Action.LAUNCH)
        template = template_from(request.user, project, data.pop("template"))
        sweep = sweeps.create_sweep(actor_of(request), project, template, **data)
        return Response(SweepSerializer(sweep).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=SweepSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        sweep = get_sweep_for_user(request.user, pk, Action.LAUNCH)
        sweep = sweeps.cancel_sweep(actor_of(request), sweep)
        return Response(SweepSerializer(sweep).data)

    @extend_schema(request=SweepExtendSerializer, responses=SweepSerializer)
    @action(detail=True, methods=["post"])
    def extend(self, request: Request, pk: str) -> Response:
        """Run `trials` more trials of an ended sweep, continuing its study: 400 for a bad
        number, 409 while the sweep runs."""
        sweep = get_sweep_for_user(request.user, pk, Action.LAUNCH)
        body = SweepExtendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sweep = sweeps.extend_sweep(actor_of(request), sweep, body.validated_data["trials"])
        return Response(SweepSerializer(sweep).data)

    @extend_schema(responses=SweepInsightsSerializer)
    @action(detail=True, methods=["get"])
    def insights(self, request: Request, pk: str) -> Response:
        """What the search found: the optimisation history, parameter importances and what
        pruning saved (as the sweep page shows them). 503 while MLflow is unreachable."""
        from apps.launches.charts import trial_metrics
        from apps.launches.insights import insights_data, sweep_insights

        sweep = get_sweep_for_user(request.user, pk, Action.VIEW)
        trials = list(sweep.trials.order_by("id"))
        running = sum(1 for t in trials if not t.is_terminal)
        found = sweep_insights(sweep, trials, trial_metrics(sweep, trials), running=running)
        return Response(insights_data(found))

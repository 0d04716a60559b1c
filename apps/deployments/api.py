"""API: deployments of your teams' projects (list, create, read, change, delete), the
manual rollback, and per-revision request metrics. Errors: 400 with field messages, 404
invisible, 403 viewers changing, 409 state conflicts, 503 when MLflow (pinning a version)
or the serving backend (metrics) is down — the errors map in apps.core.api."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.access.mixins import ScopedViewSet
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.api import int_param, int_schema
from apps.deployments import services
from apps.deployments.filters import DeploymentFilter
from apps.deployments.lookups import alias_versions, get_deployment_for_user, revisions_in_window
from apps.deployments.models import Deployment
from apps.deployments.serializers import (
    DeploymentCreateSerializer,
    DeploymentMetricsSerializer,
    DeploymentSerializer,
    DeploymentWriteSerializer,
    with_revisions,
)
from apps.deployments.serving.registry import serving_backend
from apps.launches.lookups import project_from

# The longest metrics window, in minutes (a day), and the default.
MAX_MINUTES = 1440
DEFAULT_MINUTES = 60


def metrics_body(deployment: Deployment, minutes: int) -> dict[str, Any]:
    """Per revision that may have served in the last `minutes`: requests, 4xx, 5xx, error
    rate (5xx / requests) and p50/p95/p99 latency in ms. Raises ServingUnavailable (503)."""
    since = timezone.now() - timedelta(minutes=minutes)
    revisions = revisions_in_window(deployment, since)
    found = serving_backend(deployment.backend).metrics(revisions, since) if revisions else {}
    rows = []
    for revision in revisions:
        metrics = found.get(revision.pk)
        rows.append(
            {
                "id": revision.pk,
                "number": revision.number,
                "version": revision.version,
                "status": revision.status,
                "traffic": revision.traffic,
                "is_canary": revision.is_canary,
                "requests": metrics.requests if metrics else 0,
                "errors_4xx": metrics.errors_4xx if metrics else 0,
                "errors_5xx": metrics.errors_5xx if metrics else 0,
                "error_rate": metrics.error_rate if metrics else None,
                "p50_ms": metrics.p50_ms if metrics else None,
                "p95_ms": metrics.p95_ms if metrics else None,
                "p99_ms": metrics.p99_ms if metrics else None,
            }
        )
    return {"deployment": deployment.pk, "minutes": minutes, "since": since, "revisions": rows}


class DeploymentViewSet(mixins.ListModelMixin, ScopedViewSet):
    """Deployments of your teams' projects. Filters: ?project= ?status= ?model=. Members,
    leads and platform admins change them; viewers read them. DELETE answers 202: the
    deployment is `deleting` until its model servers are stopped, then it is gone (404)."""

    queryset = Deployment.objects.all()
    serializer_class = DeploymentSerializer
    lookup_function = get_deployment_for_user
    write_action = Action.LAUNCH
    depends_on = {"create": ("MLflow",), "partial_update": ("MLflow",), "metrics": ("the serving backend",)}
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    filterset_class = DeploymentFilter

    def get_queryset(self) -> Any:
        return with_revisions(super().get_queryset()).order_by("project__team__slug", "project__slug", "name")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        rows = list(page) if page is not None else []
        context = {**self.get_serializer_context(), "alias_versions": alias_versions(rows)}
        return self.get_paginated_response(DeploymentSerializer(rows, many=True, context=context).data)

    def _fresh(self, pk: int, **kwargs: Any) -> Response:
        found = with_revisions(Deployment.objects.filter(pk=pk)).first()
        if found is None:  # deleted meanwhile
            return Response({"detail": "No such deployment."}, status=status.HTTP_404_NOT_FOUND)
        return Response(DeploymentSerializer(found, context=self.get_serializer_context()).data, **kwargs)

    @extend_schema(responses=DeploymentSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        return self._fresh(self.get_object().pk)

    @extend_schema(request=DeploymentCreateSerializer, responses={201: DeploymentSerializer})
    def create(self, request: Request) -> Response:
        body = DeploymentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        project = project_from(request.user, data.pop("project"), Action.LAUNCH)
        made = services.create_deployment(
            actor_of(request), project, name=data.pop("name"), model=data.pop("model"), **data
        )
        return self._fresh(made.pk, status=status.HTTP_201_CREATED)

    @extend_schema(request=DeploymentWriteSerializer, responses=DeploymentSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        body = DeploymentWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.update_deployment(actor_of(request), deployment, **body.validated_data)
        return self._fresh(deployment.pk)

    @extend_schema(request=None, responses={202: DeploymentSerializer})
    def destroy(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        services.delete_deployment(actor_of(request), deployment)
        return self._fresh(deployment.pk, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        services.rollback_deployment(actor_of(request), deployment)
        return self._fresh(deployment.pk)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "minutes",
                int_schema(1, MAX_MINUTES),
                description=f"the window, 1..{MAX_MINUTES} minutes back from now (default {DEFAULT_MINUTES})",
            )
        ],
        responses=DeploymentMetricsSerializer,
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        minutes = int_param(request.query_params, "minutes", DEFAULT_MINUTES, minimum=1, maximum=MAX_MINUTES)
        return Response(DeploymentMetricsSerializer(metrics_body(deployment, minutes)).data)

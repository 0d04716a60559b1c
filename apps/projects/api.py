from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.access.lookups import get_project_for_user, get_team_for_user
from apps.access.mixins import ScopedViewSet
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.projects import services
from apps.projects.filters import ProjectFilter
from apps.projects.models import Project
from apps.projects.serializers import (
    ExperimentAttachSerializer,
    ProjectCreateSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
)


class ProjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    """Projects of the teams you belong to. Leads and platform admins create and change them."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    lookup_function = get_project_for_user
    depends_on = {"attach_experiment": ("MLflow",)}  # the schema's 503 (apps.core.schema)

    filterset_class = ProjectFilter

    def get_queryset(self) -> Any:
        return super().get_queryset().select_related("team", "environment__team").order_by("team__slug", "slug")

    @extend_schema(request=ProjectCreateSerializer, responses={201: ProjectSerializer})
    def create(self, request: Request) -> Response:
        # Access first: an outsider learns nothing from validation messages.
        team_slug = request.data.get("team") if hasattr(request.data, "get") else None
        if isinstance(team_slug, str) and team_slug:
            get_team_for_user(request.user, team_slug, Action.MANAGE)
        body = ProjectCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team = get_team_for_user(request.user, data.pop("team"), Action.MANAGE)
        project = services.create_project(actor_of(request), team, **data)
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ExperimentAttachSerializer, responses=ProjectSerializer)
    @action(detail=True, methods=["post"], url_path="attach-experiment")
    def attach_experiment(self, request: Request, pk: str) -> Response:
        """Platform admins: link an MLflow experiment that already exists (id or name) to a
        project without one (audited). 403 for anyone else who can see the project."""
        project = self.get_object()
        body = ExperimentAttachSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = services.attach_experiment(actor_of(request), project, body.validated_data["experiment"])
        return Response(ProjectSerializer(project).data)

    @extend_schema(request=ProjectUpdateSerializer, responses=ProjectSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        project = self.get_object()
        body = ProjectUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = services.update_project(actor_of(request), project, **body.validated_data)
        return Response(ProjectSerializer(project).data)

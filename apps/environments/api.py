"""API: environments (list, define, read, change state and description), new versions,
the platform default, rebuilding a failed build, the build with its log, and who uses an
environment. Errors: 400 with field messages (a content field in a PATCH: "create a new
version"), 404 invisible, 403 visible but not yours to manage, 409 state conflicts — the
errors map in apps.core.api."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.access.lookups import get_team_for_user
from apps.access.mixins import ScopedViewSet
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.api import int_param, int_schema
from apps.core.errors import InvalidInput, NotFound
from apps.environments import services
from apps.environments.filters import EnvironmentFilter
from apps.environments.lookups import get_environment_for_user, with_related
from apps.environments.models import BuildStatus, Environment
from apps.environments.serializers import (
    BuildSerializer,
    EnvironmentChangeSerializer,
    EnvironmentCreateSerializer,
    EnvironmentSerializer,
    EnvironmentVersionSerializer,
    UsageSerializer,
    usage_body,
)

# The largest log offset a client may send (characters); logs are far shorter.
MAX_LOG_OFFSET = 2**31 - 1


def build_body(env: Environment, offset: int) -> dict[str, Any]:
    """The build of `env` with its log from `offset` (0 when the log was cut shorter since:
    the builder keeps its tail). Raises NotFound (404) when `env` has no local build."""
    build = env.build
    if build is None:
        raise NotFound(f"{env.label} has no local build (it has no requirements list).")
    log = build.log or ""
    start = offset if offset <= len(log) else 0
    return {
        "id": build.pk,
        "status": build.status,
        "progress": build.progress,
        "step": build.step,
        "error": build.error,
        "python": build.python,
        "packages": build.packages or {},
        "started_at": build.started_at,
        "finished_at": build.finished_at,
        "finished": build.status in (BuildStatus.READY, BuildStatus.FAILED),
        "offset": start,
        "next_offset": len(log),
        "log": log[start:],
    }


class EnvironmentViewSet(mixins.ListModelMixin, ScopedViewSet):
    """Environments: platform-wide ones (every signed-in user sees them, platform admins
    manage them) and your teams' own (their members see them, their leads manage them).
    Filters: ?name= ?team= ?state= ?q=. Content is immutable: POST …/versions/ defines
    the next version with changed content."""

    queryset = Environment.objects.all()
    serializer_class = EnvironmentSerializer
    lookup_function = get_environment_for_user
    write_action = Action.MANAGE
    http_method_names = ["get", "post", "patch", "head", "options"]
    filterset_class = EnvironmentFilter

    def get_queryset(self) -> Any:
        return with_related(super().get_queryset()).order_by("team__slug", "name", "-version")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        rows = list(page) if page is not None else []
        context = {**self.get_serializer_context(), "usage": services.usage_counts([r.pk for r in rows])}
        return self.get_paginated_response(EnvironmentSerializer(rows, many=True, context=context).data)

    def _fresh(self, pk: int, **kwargs: Any) -> Response:
        found = with_related(Environment.objects.filter(pk=pk)).get()
        return Response(EnvironmentSerializer(found, context=self.get_serializer_context()).data, **kwargs)

    @extend_schema(responses=EnvironmentSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        return self._fresh(self.get_object().pk)

    @extend_schema(request=EnvironmentCreateSerializer, responses={201: EnvironmentSerializer})
    def create(self, request: Request) -> Response:
        body = EnvironmentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        slug = data.pop("team", None) or ""
        team = get_team_for_user(request.user, slug) if slug else None
        made = services.create_environment(actor_of(request), team=team, **data)
        return self._fresh(made.pk, status=status.HTTP_201_CREATED)

    @extend_schema(request=EnvironmentChangeSerializer, responses=EnvironmentSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        env = self.get_object()
        content = sorted(
            set(getattr(request.data, "keys", lambda: [])()) & {"name", "version", "team", *services.CONTENT_FIELDS}
        )
        if content:
            text = "An environment's content is immutable: create a new version (POST …/versions/)."
            raise InvalidInput(text, fields={key: [text] for key in content})
        body = EnvironmentChangeSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.change_environment(actor_of(request), env, **body.validated_data)
        return self._fresh(env.pk)

    @extend_schema(request=EnvironmentVersionSerializer, responses={201: EnvironmentSerializer})
    @action(detail=True, methods=["post"])
    def versions(self, request: Request, pk: str) -> Response:
        env = self.get_object()
        body = EnvironmentVersionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        made = services.new_version(actor_of(request), env, **body.validated_data)
        return self._fresh(made.pk, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=EnvironmentSerializer)
    @action(detail=True, methods=["post"], url_path="set-default", url_name="set-default")
    def set_default(self, request: Request, pk: str) -> Response:
        env = self.get_object()
        services.set_default(actor_of(request), env)
        return self._fresh(env.pk)

    @extend_schema(request=None, responses=EnvironmentSerializer)
    @action(detail=True, methods=["post"])
    def rebuild(self, request: Request, pk: str) -> Response:
        env = self.get_object()
        services.rebuild_environment(actor_of(request), env)
        return self._fresh(env.pk)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "offset",
                int_schema(0, MAX_LOG_OFFSET),
                description="the log from this character on (the last answer's next_offset); default 0",
            )
        ],
        responses=BuildSerializer,
    )
    @action(detail=True, methods=["get"])
    def build(self, request: Request, pk: str) -> Response:
        env = self.get_object()
        offset = int_param(request.query_params, "offset", 0, minimum=0, maximum=MAX_LOG_OFFSET)
        return Response(BuildSerializer(build_body(env, offset)).data)

    @extend_schema(responses=UsageSerializer)
    @action(detail=True, methods=["get"])
    def usage(self, request: Request, pk: str) -> Response:
        env = self.get_object()
        return Response(UsageSerializer(usage_body(services.who_uses(env, request.user))).data)

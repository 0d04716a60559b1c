"""API: registered models (from MLflow, scoped by project), alias history and rollback,
promotion requests with approve / reject / withdraw, and a project's promotion policy.
MLflow down → 503 with a message (the errors map in apps.core.api)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.access.lookups import get_project_for_user
from apps.access.mixins import ScopedViewSet
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.filters import filter_or_400, filter_parameters
from apps.projects.models import Project
from apps.registry import policies, services
from apps.registry.filters import AliasHistoryFilter, ModelFilter, PromotionFilter
from apps.registry.lookups import get_model_for_user, get_promotion_for_user
from apps.registry.models import PromotionRequest
from apps.registry.selectors import history, model_views, one_model, requests_with_votes
from apps.registry.serializers import (
    AliasHistorySerializer,
    DecisionSerializer,
    PolicySerializer,
    PromotionCreateSerializer,
    PromotionSerializer,
    RollbackSerializer,
)


class ModelListView(APIView):
    """Registered models of a project (`?project=` id or team/project), or of every project
    you can see, with their versions and aliases."""

    depends_on = ("MLflow",)

    @extend_schema(
        operation_id="models_list",
        parameters=filter_parameters(ModelFilter),
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        visible = Project.objects.for_user(request.user).select_related("team")
        projects = list(filter_or_400(ModelFilter, request, visible))
        views = model_views(projects) if projects else []
        return Response({"count": len(views), "results": [view.as_dict() for view in views]})


class ModelDetailView(APIView):
    """One registered model: versions with their runs' metrics, aliases, open requests."""

    depends_on = ("MLflow",)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, name: str) -> Response:
        model = get_model_for_user(request.user, name, Action.VIEW)
        view, runs = one_model(model)
        data = view.as_dict()
        for version in data["versions"]:
            version["run"] = runs.get(version["run_id"])
        return Response(data)


class AliasHistoryView(APIView):
    """Which version held which alias from when to when (`to` null: now), and why."""

    depends_on = ("MLflow",)

    @extend_schema(parameters=filter_parameters(AliasHistoryFilter), responses={200: AliasHistorySerializer(many=True)})
    def get(self, request: Request, name: str) -> Response:
        model = get_model_for_user(request.user, name, Action.VIEW)
        rows = filter_or_400(AliasHistoryFilter, request, history(model))
        return Response(AliasHistorySerializer(rows, many=True).data)


class AliasRollbackView(APIView):
    """Ask to point the alias back at its previous holder; `emergency` (leads) skips the quorum."""

    depends_on = ("MLflow",)

    @extend_schema(request=RollbackSerializer, responses={201: PromotionSerializer})
    def post(self, request: Request, name: str, alias: str) -> Response:
        model = get_model_for_user(request.user, name, Action.LAUNCH)
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        made = services.request_rollback(actor_of(request), model, alias=alias, **body.validated_data)
        return Response(PromotionSerializer(made).data, status=status.HTTP_201_CREATED)


class PolicyView(APIView):
    """A project's promotion policy: readable by the team, edited by its leads (audited)."""

    @staticmethod
    def _data(project: Project) -> dict[str, Any]:
        policy = policies.policy_for(project)
        return {
            **policy.as_audit(),
            "project": project.full_slug,
            "updated_at": policy.updated_at if policy.pk else None,
        }

    @extend_schema(responses={200: PolicySerializer})
    def get(self, request: Request, pk: str) -> Response:
        return Response(self._data(get_project_for_user(request.user, pk, Action.VIEW)))

    @extend_schema(request=PolicySerializer, responses={200: PolicySerializer})
    def patch(self, request: Request, pk: str) -> Response:
        project = get_project_for_user(request.user, pk, Action.MANAGE)
        body = PolicySerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.update_policy(actor_of(request), project, **body.validated_data)
        return Response(self._data(project))


class PromotionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    """Promotion requests of your teams. Filters: ?project= ?status= ?model= ?alias=, and
    ?awaiting=me for the ones waiting for your decision."""

    queryset = PromotionRequest.objects.all()
    serializer_class = PromotionSerializer
    lookup_function = get_promotion_for_user
    write_action = Action.VIEW  # who may decide is the policy's question: the services answer 403
    depends_on = {"create": ("MLflow",)}

    filterset_class = PromotionFilter

    def get_queryset(self) -> Any:
        return requests_with_votes(super().get_queryset()).order_by("-created_at", "-id")

    @extend_schema(request=PromotionCreateSerializer, responses={201: PromotionSerializer})
    def create(self, request: Request) -> Response:
        body = PromotionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model = get_model_for_user(request.user, data["model"], Action.LAUNCH)
        made = services.create_request(
            actor_of(request), model, version=data["version"], alias=data["alias"], justification=data["justification"]
        )
        return Response(self._fresh(made.pk), status=status.HTTP_201_CREATED)

    def _fresh(self, pk: int) -> Any:
        return PromotionSerializer(requests_with_votes(PromotionRequest.objects.filter(pk=pk)).get()).data

    @extend_schema(request=DecisionSerializer, responses=PromotionSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        done = services.approve(actor_of(request), self.get_object(), body.validated_data["comment"])
        return Response(self._fresh(done.pk))

    @extend_schema(request=DecisionSerializer, responses=PromotionSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        done = services.reject(actor_of(request), self.get_object(), body.validated_data["comment"])
        return Response(self._fresh(done.pk))

    @extend_schema(request=None, responses=PromotionSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request: Request, pk: str) -> Response:
        done = services.withdraw(actor_of(request), self.get_object())
        return Response(self._fresh(done.pk))

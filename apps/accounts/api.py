"""API: auth token, me, teams, team members."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.access.lookups import get_membership_for_user, get_team_for_user
from apps.access.mixins import ScopedViewSet
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.accounts import ratelimit, services
from apps.accounts.filters import TeamFilter
from apps.accounts.models import Membership, Team, User
from apps.accounts.serializers import (
    AuthTokenRequestSerializer,
    AuthTokenResponseSerializer,
    MembershipSerializer,
    MeSerializer,
    RoleSerializer,
    TeamSerializer,
    TeamUpdateSerializer,
)
from apps.core.middleware import client_ip
from apps.core.schema import TOO_MANY, ErrorSerializer


class AuthTokenView(APIView):
    """Exchange a username and password for a new named API token (shown once)."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        request=AuthTokenRequestSerializer,
        responses={200: AuthTokenResponseSerializer, 429: OpenApiResponse(ErrorSerializer, TOO_MANY)},
    )
    def post(self, request: Request) -> Response:
        body = AuthTokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ip, username = client_ip(request), body.validated_data["username"]
        lockout = ratelimit.begin(ip, username)  # counted before the password is checked
        if lockout is not None:
            return Response(
                {"detail": lockout.message},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(lockout.retry_after)},
            )
        user = authenticate(request, username=username, password=body.validated_data["password"])
        if user is None or not user.is_active:
            return Response({"detail": "Wrong username or password."}, status=status.HTTP_400_BAD_REQUEST)
        assert isinstance(user, User)
        ratelimit.succeeded(ip, username)
        name = body.validated_data.get("name")
        token, key = services.create_api_token(
            user,
            name=name or "api login",
            expires_at=body.validated_data.get("expires_at"),
            number_if_taken=not name,
        )
        return Response({"token": key, "name": token.name, "expires_at": token.expires_at})


class MeView(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        user = User.objects.prefetch_related("memberships__team").get(pk=actor_of(request).pk)
        return Response(MeSerializer(user).data)


class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    """Teams you belong to (platform admins: all). Creating a team is for platform admins."""

    queryset = Team.objects.all()
    serializer_class = TeamSerializer
    lookup_field = "slug"
    lookup_function = get_team_for_user
    filterset_class = TeamFilter

    @extend_schema(request=TeamSerializer, responses={201: TeamSerializer})
    def create(self, request: Request) -> Response:
        body = TeamSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        team = services.create_team(
            actor_of(request),
            slug=data["slug"],
            name=data["name"],
            description=data.get("description", ""),
            gpu_budget=data.get("gpu_budget", 0),
            lead=data.get("lead", ""),
        )
        return Response(TeamSerializer(team).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TeamUpdateSerializer, responses=TeamSerializer)
    def partial_update(self, request: Request, slug: str) -> Response:
        team = self.get_object()
        body = TeamUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        team = services.update_team(actor_of(request), team, **body.validated_data)
        return Response(TeamSerializer(team).data)


class MemberViewSet(ScopedViewSet):
    """Members of one team. Reading needs any role in the team; changes need a lead."""

    serializer_class = MembershipSerializer
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    queryset = Membership.objects.all()

    def team(self, action: Action) -> Team:
        return get_team_for_user(self.request.user, self.kwargs["team_slug"], action)

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        team = self.team(Action.VIEW)
        return team.memberships.select_related("user", "team").order_by("user__username")

    def action_for_request(self) -> Action:
        # Anyone may leave a team (DELETE of oneself); other changes are for leads.
        if self.request.method == "DELETE" and self.kwargs.get("username") == self.request.user.get_username():
            return Action.VIEW
        return super().action_for_request()

    def get_object(self) -> Membership:
        action = self.action_for_request()
        return get_membership_for_user(self.request.user, self.team(action), self.kwargs["username"], action)

    def list(self, request: Request, team_slug: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(MembershipSerializer(page, many=True).data)

    @extend_schema(request=MembershipSerializer, responses={201: MembershipSerializer})
    def create(self, request: Request, team_slug: str) -> Response:
        team = self.team(Action.MANAGE)
        body = MembershipSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = services.add_member(
            actor_of(request),
            team,
            username=body.validated_data["user"]["username"],
            role=body.validated_data["role"],
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, team_slug: str, username: str) -> Response:
        return Response(MembershipSerializer(self.get_object()).data)

    @extend_schema(request=RoleSerializer, responses=MembershipSerializer)
    def partial_update(self, request: Request, team_slug: str, username: str) -> Response:
        membership = self.get_object()
        body = RoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = services.set_member_role(actor_of(request), membership, body.validated_data["role"])
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request: Request, team_slug: str, username: str) -> Response:
        membership = self.get_object()
        services.remove_member(actor_of(request), membership)
        return Response(status=status.HTTP_204_NO_CONTENT)

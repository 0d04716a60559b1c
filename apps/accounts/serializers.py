from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User


class MembershipBriefSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    team = serializers.CharField(source="team.slug")

    class Meta:
        model = Membership
        fields = ["team", "role"]


class MeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    memberships = MembershipBriefSerializer(many=True, read_only=True)

    class Meta:
        model = User
        fields = ["username", "email", "first_name", "last_name", "is_platform_admin", "memberships"]


class TeamSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    lead = serializers.CharField(write_only=True, required=False, help_text="Username of the first lead.")

    class Meta:
        model = Team
        fields = ["slug", "name", "description", "gpu_budget", "created_at", "lead"]
        read_only_fields = ["created_at"]
        # Uniqueness is the service's job (a clear 400 from one place), not the serializer's.
        extra_kwargs: dict[str, dict[str, Any]] = {"slug": {"validators": []}}


class TeamUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    gpu_budget = serializers.IntegerField(min_value=0, required=False)


class MembershipSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    username = serializers.CharField(source="user.username")
    team = serializers.CharField(source="team.slug", read_only=True)
    role = serializers.CharField()

    class Meta:
        model = Membership
        fields = ["username", "team", "role", "created_at"]
        read_only_fields = ["created_at"]


class RoleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    role = serializers.CharField(help_text="viewer, member or lead")

    def validate_role(self, value: Any) -> str:
        if value not in Role.values:
            raise serializers.ValidationError(f"Unknown role {value!r}; choose one of: viewer, member, lead.")
        return str(value)


class AuthTokenRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
    name = serializers.CharField(required=False, max_length=80)


class AuthTokenResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    token = serializers.CharField()
    name = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)

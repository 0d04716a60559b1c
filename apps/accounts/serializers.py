from __future__ import annotations

import re
from typing import Any, cast

from rest_framework import serializers

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User, slug_validator

# A whole number a PositiveIntegerField column holds (32-bit on PostgreSQL).
MAX_COUNT = 2**31 - 1
UNKNOWN_ROLE = "Unknown role {input!r}; choose one of: viewer, member, lead."


def slug_field(**kwargs: Any) -> serializers.RegexField:
    """A team, project or template slug as `slug_validator` allows it; the OpenAPI schema
    shows its pattern (1-40 of a-z, 0-9 and "-", starting and ending with a letter or digit)."""
    return serializers.RegexField(
        cast("re.Pattern[str]", slug_validator.regex).pattern,
        max_length=40,
        error_messages={"invalid": slug_validator.message},
        **kwargs,
    )


def role_field(**kwargs: Any) -> serializers.ChoiceField:
    """A team role (apps.access.roles.Role): viewer, member or lead."""
    return serializers.ChoiceField(choices=Role.choices, error_messages={"invalid_choice": UNKNOWN_ROLE}, **kwargs)


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
    slug = slug_field()

    class Meta:
        model = Team
        fields = ["slug", "name", "description", "gpu_budget", "created_at", "lead"]
        read_only_fields = ["created_at"]
        # Uniqueness is the service's job (a clear 400 from one place), not the serializer's.
        extra_kwargs: dict[str, dict[str, Any]] = {"slug": {"validators": []}}


class TeamUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    gpu_budget = serializers.IntegerField(min_value=0, max_value=MAX_COUNT, required=False)


class MembershipSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    username = serializers.CharField(source="user.username")
    team = serializers.CharField(source="team.slug", read_only=True)
    role = role_field()

    class Meta:
        model = Membership
        fields = ["username", "team", "role", "created_at"]
        read_only_fields = ["created_at"]


class RoleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    role = role_field()


class AuthTokenRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
    name = serializers.CharField(
        required=False, max_length=80, help_text="Unique among your live tokens; default 'api login' (numbered)."
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="When the token stops working (optional; must be in the future)."
    )


class AuthTokenResponseSerializer(serializers.Serializer):  # type: ignore[type-arg]
    token = serializers.CharField()
    name = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)

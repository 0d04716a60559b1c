"""API shapes of environments: the environment as listed and shown (output), what POST,
PATCH and a new version accept (input; the services validate), its build with the log, and
"who uses it"."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.environments.models import Environment, EnvironmentBuild, EnvironmentState
from apps.environments.services import usage_counts
from apps.environments.validation import image_is_pinned

USAGE_KINDS = ("templates", "projects", "launches", "deployments")


class BuildSummarySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = EnvironmentBuild
        fields = ["id", "status", "progress", "step", "error", "finished_at"]
        read_only_fields = fields


class RefSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    label = serializers.CharField()  # type: ignore[assignment]


class UsageCountsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    templates = serializers.IntegerField()
    projects = serializers.IntegerField()
    launches = serializers.IntegerField()
    deployments = serializers.IntegerField()


class EnvironmentSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """An environment as the API shows it. Context `usage` ({environment id: counts}, see
    services.usage_counts) is computed for the one environment when absent."""

    label = serializers.CharField(read_only=True)  # type: ignore[assignment]  # the field, not DRF's own label
    team = serializers.CharField(source="team.slug", read_only=True, allow_null=True)
    pinned = serializers.SerializerMethodField()
    replaced_by = serializers.SerializerMethodField()
    build = BuildSummarySerializer(read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Environment
        fields = [
            "id",
            "label",
            "name",
            "version",
            "team",
            "description",
            "image",
            "pinned",
            "pod_defaults",
            "requirements",
            "extends_portal",
            "is_portal",
            "state",
            "state_reason",
            "replaced_by",
            "redirect",
            "message",
            "is_default",
            "build",
            "created_by",
            "created_at",
            "updated_at",
            "usage",
        ]
        read_only_fields = fields

    def get_pinned(self, env: Environment) -> bool:
        """Whether the image is pinned by digest."""
        return image_is_pinned(env.image)

    @extend_schema_field(RefSerializer(allow_null=True))
    def get_replaced_by(self, env: Environment) -> dict[str, Any] | None:
        other = env.replaced_by
        return {"id": other.pk, "label": other.label} if other is not None else None

    @extend_schema_field(UsageCountsSerializer)
    def get_usage(self, env: Environment) -> dict[str, int]:
        known: dict[int, dict[str, int]] = self.context.setdefault("usage", {})
        if env.pk not in known:
            known.update(usage_counts([env.pk]))
        return known[env.pk]


class EnvironmentCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """POST /environments/: `team` (a team's slug; empty or absent = platform-wide)."""

    team = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=40)
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    image = serializers.CharField(required=False, allow_blank=True, max_length=500)
    pod_defaults = serializers.JSONField(required=False, allow_null=True)
    requirements = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    extends_portal = serializers.BooleanField(required=False, default=True)


class EnvironmentVersionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """POST /environments/{id}/versions/: the content that differs from this version."""

    description = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    image = serializers.CharField(required=False, allow_blank=True, max_length=500)
    pod_defaults = serializers.JSONField(required=False, allow_null=True)
    requirements = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    extends_portal = serializers.BooleanField(required=False)


class EnvironmentChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """PATCH /environments/{id}/: what may change of an existing version."""

    description = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    state = serializers.ChoiceField(choices=EnvironmentState.choices, required=False)
    replaced_by = serializers.IntegerField(required=False, min_value=1)
    redirect = serializers.BooleanField(required=False)
    message = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class BuildSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """GET /environments/{id}/build/: the build, and its log from `offset` (characters)."""

    id = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.IntegerField()
    step = serializers.CharField()
    error = serializers.CharField()
    python = serializers.CharField()
    packages = serializers.DictField(child=serializers.CharField())
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    finished = serializers.BooleanField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField()
    log = serializers.CharField()


class UsageRowSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    label = serializers.CharField()  # type: ignore[assignment]
    status = serializers.CharField(required=False)


class UsageKindSerializer(serializers.Serializer):  # type: ignore[type-arg]
    count = serializers.IntegerField()
    rows = UsageRowSerializer(many=True)


class UsageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """GET /environments/{id}/usage/: counts of every user; rows only those you may see."""

    templates = UsageKindSerializer()
    projects = UsageKindSerializer()
    launches = UsageKindSerializer()
    deployments = UsageKindSerializer()


def usage_body(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """services.who_uses's answer as plain values: rows become {id, label[, status]}."""

    def row(kind: str, obj: Any) -> dict[str, Any]:
        if kind == "templates":
            label = f"{obj.team.slug}/{obj.slug}" if obj.team_id else obj.slug
            return {"id": obj.pk, "label": label}
        if kind == "projects":
            return {"id": obj.pk, "label": obj.full_slug}
        if kind == "launches":
            return {"id": obj.pk, "label": f"{obj.project.full_slug} #{obj.pk}", "status": obj.status}
        return {"id": obj.pk, "label": f"{obj.project.full_slug}/{obj.name}", "status": obj.status}

    return {
        kind: {"count": found[kind]["count"], "rows": [row(kind, obj) for obj in found[kind]["rows"]]}
        for kind in USAGE_KINDS
    }

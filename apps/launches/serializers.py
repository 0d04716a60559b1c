from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.accounts.serializers import slug_field
from apps.launches.models import TERMINAL, Launch, Sweep, Template
from apps.tracking.gateway import gateway

# What apps.launches.services.create_template accepts as a template's max_runtime_seconds: 7 days.
MAX_RUNTIME = 7 * 24 * 3600


class TemplateSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    team = serializers.SerializerMethodField()
    resources = serializers.JSONField(source="default_resources", read_only=True)

    class Meta:
        model = Template
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "team",
            "image",
            "command",
            "parameters",
            "resources",
            "default_resources",
            "max_resources",
            "max_runtime_seconds",
            "backends",
            "is_active",
            "updated_at",
        ]
        read_only_fields = fields

    def get_team(self, template: Template) -> str | None:
        return template.team.slug if template.team else None


class TemplateWriteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    team = serializers.CharField(required=False, allow_null=True, help_text="Team slug; omit for a global template")
    slug = slug_field()
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    image = serializers.CharField(max_length=300)
    command = serializers.ListField(child=serializers.CharField())
    parameters = serializers.DictField(required=False)
    default_resources = serializers.DictField(required=False)
    max_resources = serializers.DictField(required=False)
    max_runtime_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_RUNTIME)
    backends = serializers.ListField(child=serializers.CharField(), required=False)


class TemplateUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    image = serializers.CharField(max_length=300, required=False)
    command = serializers.ListField(child=serializers.CharField(), required=False)
    parameters = serializers.DictField(required=False)
    default_resources = serializers.DictField(required=False)
    max_resources = serializers.DictField(required=False)
    max_runtime_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_RUNTIME)
    backends = serializers.ListField(child=serializers.CharField(), required=False)
    is_active = serializers.BooleanField(required=False)


class LaunchSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    project = serializers.CharField(source="project.full_slug", read_only=True)
    project_id = serializers.IntegerField(read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    job_name = serializers.CharField(read_only=True)
    mlflow_run_url = serializers.SerializerMethodField()

    class Meta:
        model = Launch
        fields = [
            "id",
            "name",
            "project",
            "project_id",
            "template",
            "created_by",
            "sweep",
            "status",
            "status_reason",
            "exit_code",
            "parameters",
            "resources",
            "backend",
            "job_name",
            "mlflow_run_id",
            "mlflow_experiment_id",
            "mlflow_run_url",
            "created_at",
            "submitted_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_mlflow_run_url(self, launch: Launch) -> str:
        if not launch.mlflow_run_id:
            return ""
        return gateway().run_url(launch.mlflow_experiment_id, launch.mlflow_run_id)


class LaunchCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    project = serializers.CharField(help_text="Project id or team/project")
    template = serializers.CharField(help_text="Template id or slug")
    parameters = serializers.JSONField(required=False, default=dict)
    resources = serializers.JSONField(required=False, default=dict)
    name = serializers.CharField(required=False, allow_blank=True, max_length=120, default="")


class SweepSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    project = serializers.CharField(source="project.full_slug", read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    launches = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Sweep
        fields = [
            "id",
            "name",
            "project",
            "template",
            "created_by",
            "strategy",
            "space",
            "base_parameters",
            "resources",
            "max_trials",
            "parallelism",
            "metric",
            "direction",
            "seed",
            "status",
            "status_reason",
            "mlflow_parent_run_id",
            "created_at",
            "finished_at",
            "progress",
            "launches",
        ]
        read_only_fields = fields

    def get_launches(self, sweep: Sweep) -> list[dict[str, Any]]:
        return [
            {"id": t.pk, "status": t.status, "parameters": t.parameters, "mlflow_run_id": t.mlflow_run_id}
            for t in sweep.trials.all()
        ]

    def get_progress(self, sweep: Sweep) -> dict[str, int]:
        from apps.launches.models import TERMINAL

        statuses = [t.status for t in sweep.trials.all()]
        return {
            "planned": len(sweep.planned),
            "started": len(statuses),
            "done": sum(1 for s in statuses if s in TERMINAL),
            "running": sum(1 for s in statuses if s not in TERMINAL),
        }


def sweep_progress(sweep: Sweep, trials: Any) -> dict[str, int]:
    """k of N: planned, started, done (ended in any way) and still running."""
    statuses = [t.status for t in trials]
    return {
        "planned": len(sweep.planned),
        "started": len(statuses),
        "done": sum(1 for s in statuses if s in TERMINAL),
        "running": sum(1 for s in statuses if s not in TERMINAL),
    }


class SweepCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    project = serializers.CharField()
    template = serializers.CharField()
    strategy = serializers.CharField()
    space = serializers.JSONField()
    max_trials = serializers.JSONField()
    parallelism = serializers.JSONField()
    parameters = serializers.JSONField(required=False, default=dict)
    resources = serializers.JSONField(required=False, default=dict)
    metric = serializers.CharField(required=False, allow_blank=True, default="")
    direction = serializers.CharField(required=False, default="max")
    name = serializers.CharField(required=False, allow_blank=True, default="")
    seed = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**63 - 1)

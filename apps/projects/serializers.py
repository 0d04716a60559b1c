from __future__ import annotations

from rest_framework import serializers

from apps.accounts.serializers import MAX_COUNT, slug_field
from apps.projects.models import Backend, Project


class ProjectSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)  # type: ignore[var-annotated]
    full_slug = serializers.CharField(read_only=True)
    mlflow_experiment = serializers.CharField(source="mlflow_experiment_name", read_only=True)
    environment = serializers.SerializerMethodField(
        help_text="The default environment of its launches (label name:version), empty when none."
    )

    class Meta:
        model = Project
        fields = [
            "id",
            "team",
            "slug",
            "full_slug",
            "name",
            "description",
            "gpu_quota",
            "backend",
            "namespace",
            "mlflow_experiment",
            "mlflow_experiment_id",
            "mlflow_state",
            "mlflow_error",
            "environment",
            "environment_id",
            "created_at",
        ]
        read_only_fields = fields

    def get_environment(self, project: Project) -> str:
        return project.environment.label if project.environment is not None else ""


class ProjectCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    team = serializers.CharField(help_text="The owning team's slug.")
    slug = slug_field()
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    gpu_quota = serializers.IntegerField(min_value=0, max_value=MAX_COUNT, default=0)
    backend = serializers.ChoiceField(
        choices=Backend.choices, required=False, help_text="Default: the platform's PLINTH_DEFAULT_BACKEND."
    )
    namespace = serializers.CharField(max_length=63, required=False, allow_blank=True, default="")
    mlflow_experiment = serializers.CharField(
        max_length=250,
        required=False,
        allow_blank=True,
        default="",
        help_text="Name of the NEW experiment Plinth creates (default <team>/<project>).",
    )
    attach_existing = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Platform admins only: link the experiment of that name that already exists in MLflow.",
    )


class ExperimentAttachSerializer(serializers.Serializer):  # type: ignore[type-arg]
    experiment = serializers.CharField(max_length=250, help_text="The MLflow experiment's id or name.")


class ProjectUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    gpu_quota = serializers.IntegerField(min_value=0, max_value=MAX_COUNT, required=False)
    backend = serializers.ChoiceField(choices=Backend.choices, required=False)
    environment = serializers.CharField(
        required=False,
        max_length=200,
        help_text="The default environment of its launches: an id or label (name:version, team/name:version); "
        "ready or deprecated, platform-wide or the team's own.",
    )

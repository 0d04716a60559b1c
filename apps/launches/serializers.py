from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.accounts.serializers import slug_field
from apps.core.numbers import JSON_INF, JSON_NAN, JSON_NEG_INF
from apps.launches.models import TERMINAL, Launch, Sweep, SweepStrategy, Template
from apps.tracking.gateway import gateway

# Sweep.direction in the API's `objective` spelling.
DIRECTIONS = {"max": "maximize", "min": "minimize"}

# What apps.launches.services.create_template accepts as a template's max_runtime_seconds: 7 days.
MAX_RUNTIME = 7 * 24 * 3600
# The OpenAPI description of a resources object (a launch's, a sweep's, a template's).
RESOURCES_HELP = (
    '{"cpu": "2", "memory": "4Gi", "gpus": 1, "gpu_product": "NVIDIA-A100-SXM4-80GB"}; gpu_product is the value '
    "of the nvidia.com/gpu.product node label a GPU pod selects (empty: any GPU). Deprecated: gpu_model, the old "
    "name of gpu_product, is still accepted on input (giving both with different values is a 400) and never returned."
)


# A template's `objective` in the schema (answers and requests; null or {}: none).
TEMPLATE_OBJECTIVE_SCHEMA = {
    "type": "object",
    "nullable": True,
    "properties": {
        "metric": {"type": "string", "minLength": 1, "maxLength": 120, "description": "A metric logged at every step"},
        "direction": {"type": "string", "enum": list(DIRECTIONS.values())},
    },
    "additionalProperties": False,
}


@extend_schema_field(TEMPLATE_OBJECTIVE_SCHEMA)
class TemplateObjectiveField(serializers.JSONField):
    """A template's `objective` as typed in the schema; validated by the templates service
    (400 on `objective`)."""


class TemplateSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    team = serializers.SerializerMethodField()
    resources = serializers.JSONField(source="default_resources", read_only=True)
    environment = serializers.SerializerMethodField(
        help_text="The environment its launches run in (label name:version), empty when it pins none."
    )
    objective = serializers.SerializerMethodField(
        help_text="The objective a sweep over it starts from ({metric, direction: minimize|maximize}: a metric "
        "the script logs at every step, so early stopping can act); null when it suggests none."
    )

    class Meta:
        model = Template
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "team",
            "environment",
            "environment_id",
            "image",
            "command",
            "parameters",
            "resources",
            "default_resources",
            "max_resources",
            "max_runtime_seconds",
            "backends",
            "is_active",
            "objective",
            "updated_at",
        ]
        read_only_fields = fields

    def get_team(self, template: Template) -> str | None:
        return template.team.slug if template.team else None

    def get_environment(self, template: Template) -> str:
        return template.environment.label if template.environment is not None else ""

    @extend_schema_field({**TEMPLATE_OBJECTIVE_SCHEMA, "required": ["metric", "direction"]})
    def get_objective(self, template: Template) -> dict[str, str] | None:
        found = template.objective or {}
        if not found.get("metric"):
            return None
        return {"metric": found["metric"], "direction": DIRECTIONS.get(found.get("direction", ""), "maximize")}


TEMPLATE_OBJECTIVE_HELP = (
    'The objective sweeps over it start from: {"metric": name, "direction": "minimize" | "maximize"}, a metric '
    "the script logs at every step (so early stopping can act); {} or null: none."
)


def pinned_environment_field() -> serializers.CharField:
    """A template's `environment`: an id or label the service resolves (400 on the field)."""
    return serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=200,
        help_text="Pin an environment: id or label (name:version, team/name:version), platform-wide or the "
        "template's team's own; empty or null: none pinned.",
    )


class TemplateWriteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    team = serializers.CharField(required=False, allow_null=True, help_text="Team slug; omit for a global template")
    slug = slug_field()
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    image = serializers.CharField(max_length=300)
    command = serializers.ListField(child=serializers.CharField())
    parameters = serializers.DictField(required=False)
    default_resources = serializers.DictField(required=False, help_text=RESOURCES_HELP)
    max_resources = serializers.DictField(required=False, help_text=RESOURCES_HELP)
    max_runtime_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_RUNTIME)
    backends = serializers.ListField(child=serializers.CharField(), required=False)
    environment = pinned_environment_field()
    objective = TemplateObjectiveField(required=False, allow_null=True, help_text=TEMPLATE_OBJECTIVE_HELP)


class TemplateUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    image = serializers.CharField(max_length=300, required=False)
    command = serializers.ListField(child=serializers.CharField(), required=False)
    parameters = serializers.DictField(required=False)
    default_resources = serializers.DictField(required=False, help_text=RESOURCES_HELP)
    max_resources = serializers.DictField(required=False, help_text=RESOURCES_HELP)
    max_runtime_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_RUNTIME)
    backends = serializers.ListField(child=serializers.CharField(), required=False)
    is_active = serializers.BooleanField(required=False)
    environment = pinned_environment_field()
    objective = TemplateObjectiveField(required=False, allow_null=True, help_text=TEMPLATE_OBJECTIVE_HELP)


class LaunchSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    project = serializers.CharField(source="project.full_slug", read_only=True)
    project_id = serializers.IntegerField(read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    job_name = serializers.CharField(read_only=True)
    mlflow_run_url = serializers.SerializerMethodField()
    environment = serializers.SerializerMethodField(
        help_text="The environment it runs in (label name:version); empty on launches older than environments."
    )
    environment_warnings = serializers.SerializerMethodField(
        help_text="On the response that created it: what to know about its environment (deprecated, redirected)."
    )

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
            "environment",
            "environment_id",
            "environment_warnings",
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

    def get_environment(self, launch: Launch) -> str:
        return launch.environment.label if launch.environment is not None else ""

    def get_environment_warnings(self, launch: Launch) -> list[str]:
        return list(launch.environment_warnings)

    def get_mlflow_run_url(self, launch: Launch) -> str:
        if not launch.mlflow_run_id:
            return ""
        return gateway().run_url(launch.mlflow_experiment_id, launch.mlflow_run_id)


class LaunchCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    project = serializers.CharField(help_text="Project id or team/project")
    template = serializers.CharField(help_text="Template id or slug")
    environment = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=200,
        help_text="Environment id or label (name:version, team/name:version); default: the template's pinned one, "
        "else the project's",
    )
    parameters = serializers.JSONField(required=False, default=dict)
    resources = serializers.JSONField(required=False, default=dict, help_text=RESOURCES_HELP)
    name = serializers.CharField(required=False, allow_blank=True, max_length=120, default="")


class SweepSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    project = serializers.CharField(source="project.full_slug", read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    launches = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    objective = serializers.SerializerMethodField()
    environment = serializers.SerializerMethodField(
        help_text="The environment every trial runs in (label name:version), resolved when the sweep was created; "
        "empty on sweeps older than that."
    )

    class Meta:
        model = Sweep
        fields = [
            "id",
            "name",
            "project",
            "template",
            "created_by",
            "environment",
            "environment_id",
            "strategy",
            "space",
            "base_parameters",
            "resources",
            "max_trials",
            "parallelism",
            "metric",
            "direction",
            "objective",
            "early_stopping",
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

    def get_environment(self, sweep: Sweep) -> str:
        return sweep.environment.label if sweep.environment is not None else ""

    def get_objective(self, sweep: Sweep) -> dict[str, str] | None:
        """The metric the sweep optimises and its direction (minimize|maximize); None without one."""
        if not sweep.metric:
            return None
        return {"metric": sweep.metric, "direction": DIRECTIONS[sweep.direction]}

    def get_launches(self, sweep: Sweep) -> list[dict[str, Any]]:
        return [
            {
                "id": t.pk,
                "trial": t.trial,
                "status": t.status,
                "status_reason": t.status_reason,
                "parameters": t.parameters,
                "objective": t.objective,
                "mlflow_run_id": t.mlflow_run_id,
            }
            for t in sweep.trials.all()
        ]

    def get_progress(self, sweep: Sweep) -> dict[str, int]:
        from apps.launches.models import TERMINAL

        statuses = [t.status for t in sweep.trials.all()]
        return {
            "planned": planned_count(sweep),
            "started": len(statuses),
            "done": sum(1 for s in statuses if s in TERMINAL),
            "running": sum(1 for s in statuses if s not in TERMINAL),
        }


def planned_count(sweep: Sweep) -> int:
    """The N of "k of N": every planned trial; an adaptive sweep's trials are planned one
    at a time, so its N is `max_trials` while it runs."""
    from apps.launches.optimizer import ADAPTIVE

    if sweep.strategy in ADAPTIVE and sweep.status == "running":
        return max(sweep.max_trials, len(sweep.planned))
    return len(sweep.planned)


def sweep_progress(sweep: Sweep, trials: Any) -> dict[str, int]:
    """k of N: planned, started, done (ended in any way) and still running."""
    statuses = [t.status for t in trials]
    return {
        "planned": planned_count(sweep),
        "started": len(statuses),
        "done": sum(1 for s in statuses if s in TERMINAL),
        "running": sum(1 for s in statuses if s not in TERMINAL),
    }


@extend_schema_field(
    {
        "oneOf": [{"type": "number"}, {"type": "string", "enum": [JSON_NAN, JSON_INF, JSON_NEG_INF]}],
        "nullable": True,
    }
)
class MetricValueField(serializers.FloatField):
    """A logged metric value: a number, or "NaN"/"Infinity"/"-Infinity" as the API's JSON
    spells the non-finite ones (apps.core.numbers.json_safe); null when never logged."""


class SweepHistoryPointSerializer(serializers.Serializer):  # type: ignore[type-arg]
    trial = serializers.IntegerField(help_text="Trial number (1-based, as in the trial's name)")
    launch = serializers.IntegerField(help_text="The trial's launch id")
    status = serializers.CharField(help_text="succeeded, pruned, failed or cancelled")
    value = MetricValueField(
        allow_null=True,
        help_text='The objective as last logged (a pruned trial: when it was stopped); "NaN"/"Infinity" '
        "when it logged one, null when never logged",
    )
    best = serializers.FloatField(
        allow_null=True, help_text="Best finite objective of the completed trials up to this one (null until one)"
    )


class SweepInsightsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """What a sweep's search found (apps.launches.insights.insights_data), for the schema."""

    history = SweepHistoryPointSerializer(many=True, help_text="Every ended trial, by trial number")
    history_note = serializers.CharField(help_text="Which trials the history cannot plot, and why")
    importances = serializers.DictField(
        child=serializers.FloatField(), help_text="{parameter: share of importance, 0..1}, largest first"
    )
    importances_note = serializers.CharField(help_text="Why there are no importances (empty when there are)")
    pruned = serializers.IntegerField(help_text="How many trials were pruned")
    gpu_hours_saved = serializers.FloatField(
        allow_null=True, help_text="GPU-hours pruning saved (null: CPU-only sweep, or no trial completed yet)"
    )
    hours_saved = serializers.FloatField(
        allow_null=True, help_text="Hours of run time pruning saved (null: no trial completed yet)"
    )


def _early_stopping_schema() -> dict[str, Any]:
    """The JSON schema of `early_stopping`, from the keys `sweeps.clean_early_stopping` accepts."""
    from apps.launches.sweeps import EARLY_STOPPING_KEYS, MAX_STEPS, MAX_TRIALS

    properties: dict[str, Any] = {
        "type": {"type": "string", "enum": list(EARLY_STOPPING_KEYS)},
        "min_steps": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_STEPS,
            "description": "No trial is pruned before it logged this step",
        },
        "min_trials": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_TRIALS,
            "description": "median only: completed trials needed before any pruning (default 3)",
        },
        "reduction_factor": {
            "type": "integer",
            "minimum": 2,
            "maximum": 10,
            "description": "asha and hyperband only (default 3)",
        },
        "max_steps": {
            "type": "integer",
            "minimum": 2,
            "maximum": MAX_STEPS,
            "description": "hyperband only: the steps a full trial logs, above min_steps (default: estimated)",
        },
    }
    keys = sorted(set().union(*EARLY_STOPPING_KEYS.values()))
    return {
        "type": "object",
        "nullable": True,
        "properties": {key: properties[key] for key in keys},
        "required": ["type", "min_steps"],
        "additionalProperties": False,
    }


def _early_stopping_help() -> str:
    from apps.launches.sweeps import EARLY_STOPPING_KEYS

    kinds = "; ".join(f"{kind}: {', '.join(sorted(keys))}" for kind, keys in EARLY_STOPPING_KEYS.items())
    return (
        'Early stopping with Optuna\'s pruners, e.g. {"type": "median", "min_steps": 5}; omit or null: every '
        f"trial runs to its end. Each type takes only its own keys ({kinds})."
    )


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {
            "metric": {"type": "string", "minLength": 1, "maxLength": 120, "description": "A metric the template logs"},
            "direction": {"type": "string", "enum": list(DIRECTIONS.values()), "default": "maximize"},
        },
        "required": ["metric"],
        "additionalProperties": False,
    }
)
class ObjectiveField(serializers.JSONField):
    """A sweep's `objective` as typed in the schema; validated by SweepCreateSerializer.validate
    (400 on `objective`, `objective.metric`, `objective.direction`)."""


@extend_schema_field(_early_stopping_schema())
class EarlyStoppingField(serializers.JSONField):
    """A sweep's `early_stopping` as typed in the schema; validated by
    sweeps.clean_early_stopping (400 on `early_stopping.<key>`)."""


class SweepCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    project = serializers.CharField()
    template = serializers.CharField()
    strategy = serializers.ChoiceField(
        choices=SweepStrategy.choices,
        error_messages={"invalid_choice": f"Choose {', '.join(SweepStrategy.values)}."},
        help_text="grid and random plan every trial up front; bayes (TPE) and cmaes ask the optimiser one "
        "trial at a time",
    )
    space = serializers.JSONField()
    max_trials = serializers.JSONField()
    parallelism = serializers.JSONField()
    parameters = serializers.JSONField(required=False, default=dict)
    resources = serializers.JSONField(required=False, default=dict, help_text=RESOURCES_HELP)
    metric = serializers.CharField(required=False, allow_blank=True, default="")
    direction = serializers.CharField(required=False, default="max")
    name = serializers.CharField(required=False, allow_blank=True, default="")
    seed = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**63 - 1)
    objective = ObjectiveField(
        required=False, default=None, help_text='{"metric": name, "direction": "minimize" | "maximize"}'
    )
    early_stopping = EarlyStoppingField(required=False, default=None, help_text=_early_stopping_help())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """`objective` is another spelling of `metric` + `direction` (minimize → min,
        maximize → max); giving both with different values is a 400."""
        objective = attrs.pop("objective", None)
        if objective is None:
            return attrs
        errors: dict[str, list[str]] = {}
        if not isinstance(objective, dict):
            raise serializers.ValidationError(
                {"objective": ['An object: {"metric": "loss", "direction": "minimize"}.']}
            )
        metric = objective.get("metric")
        direction = objective.get("direction", "maximize")
        if not isinstance(metric, str) or not metric.strip():
            errors["objective.metric"] = ["Name the metric the template logs."]
        if direction not in DIRECTIONS.values():
            errors["objective.direction"] = ["Choose minimize or maximize."]
        unknown = sorted(set(objective) - {"metric", "direction"})
        if unknown:
            errors["objective"] = [f"Unknown keys: {', '.join(unknown)}."]
        if errors:
            raise serializers.ValidationError(errors)
        short = {v: k for k, v in DIRECTIONS.items()}[direction]
        if attrs.get("metric") and attrs["metric"] != metric:
            raise serializers.ValidationError({"metric": ["Give the metric once: in objective or in metric."]})
        if "direction" in self.initial_data and attrs.get("direction") != short:
            raise serializers.ValidationError({"direction": ["Give the direction once: in objective or here."]})
        attrs["metric"], attrs["direction"] = str(metric).strip(), short
        return attrs


class SweepExtendSerializer(serializers.Serializer):  # type: ignore[type-arg]
    trials = serializers.JSONField(help_text="How many more trials, 1..1000")

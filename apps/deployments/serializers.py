"""API shapes of deployments: the deployment with its recent revisions (output), what
POST and PATCH accept (input; the services validate bounds and references), and the
metrics answer."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.deployments.lookups import alias_versions, gateway_path
from apps.deployments.models import LIVE_REVISION_STATUSES, Deployment, Revision, RevisionStatus

# How many revisions (newest first) a deployment shows: the live ones are always among them.
REVISIONS_SHOWN = 10


def with_revisions(queryset: QuerySet[Deployment]) -> QuerySet[Deployment]:
    """`queryset` with everything the serializer reads, in a fixed number of queries."""
    recent = Revision.objects.select_related("environment__team").order_by("deployment_id", "-number")
    return queryset.select_related("project__team", "created_by", "environment__team").prefetch_related(
        Prefetch("revisions", queryset=recent, to_attr="recent_revisions")
    )


def recent_revisions(deployment: Deployment) -> list[Revision]:
    """The deployment's revisions, newest first (the prefetched ones when there are)."""
    found = getattr(deployment, "recent_revisions", None)
    if found is None:
        found = list(deployment.revisions.order_by("-number"))
    return list(found)


def serving_revision(revisions: list[Revision]) -> Revision | None:
    """The stable revision: serving, not the canary, with the largest share."""
    serving = [r for r in revisions if r.status == RevisionStatus.SERVING]
    stable = [r for r in serving if not r.is_canary] or serving
    return max(stable, key=lambda r: (r.traffic, r.number)) if stable else None


# How rollout.rollback words the reason of the revisions a manual rollback retires.
ROLLED_BACK_BY_HAND = ("rolled back by ", "rollout abandoned: ")


def left_by_rollback(revision: Revision) -> bool:
    """Whether `revision` failed (its pre-flight or its canary) or was retired by a manual
    rollback (rather than superseded, or retired after its warm window)."""
    if revision.status == RevisionStatus.FAILED:
        return True
    return revision.status == RevisionStatus.RETIRED and revision.reason.startswith(ROLLED_BACK_BY_HAND)


def drift_of(deployment: Deployment, revisions: list[Revision], alias_version: int | None) -> bool:
    """Whether the alias points at a version the deployment does not serve and will not
    serve by itself: no live revision (starting, ready or serving) has that version, and
    its latest revision failed or was rolled back by hand. A version the rollout is still
    starting (or has not started yet) is no drift; unknown alias → no drift."""
    if alias_version is None:
        return False
    of_version = sorted((r for r in revisions if r.version == alias_version), key=lambda r: -r.number)
    if not of_version or any(r.status in LIVE_REVISION_STATUSES for r in of_version):
        return False
    return left_by_rollback(of_version[0])


class RevisionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    environment_label = serializers.CharField(
        source="environment.label",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The environment it serves in (name:version); null until its pre-flight resolved it.",
    )

    class Meta:
        model = Revision
        fields = [
            "id",
            "number",
            "version",
            "environment",
            "environment_label",
            "status",
            "reason",
            "traffic",
            "is_canary",
            "restarts",
            "created_at",
            "ready_at",
            "canary_started_at",
            "serving_at",
            "retired_at",
        ]
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A deployment as the API shows it. Context: `request` (for the absolute `url`) and
    `alias_versions` ({deployment id: version}, see lookups.alias_versions; computed for
    the one deployment when absent)."""

    project = serializers.CharField(source="project.full_slug", read_only=True)
    model = serializers.CharField(source="model_name", read_only=True)
    version = serializers.IntegerField(source="pinned_version", read_only=True, allow_null=True)
    serving_version = serializers.SerializerMethodField()
    alias_version = serializers.SerializerMethodField()
    drift = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    revisions = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    environment_label = serializers.CharField(
        source="environment.label",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The environment its revisions serve in; null: the one the served version's training run "
        "recorded (else the project's).",
    )

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "project",
            "model",
            "alias",
            "version",
            "backend",
            "status",
            "status_reason",
            "serving_version",
            "alias_version",
            "drift",
            "url",
            "canary_percent",
            "canary_minutes",
            "max_error_rate",
            "max_p95_ms",
            "min_replicas",
            "max_replicas",
            "resources",
            "input_example",
            "capture_samples",
            "environment",
            "environment_label",
            "revisions",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def _alias_version(self, deployment: Deployment) -> int | None:
        known: dict[int, int | None] = self.context.setdefault("alias_versions", {})
        if deployment.pk not in known:  # not computed for the page: one query for this one
            known.update(alias_versions([deployment]))
        return known.get(deployment.pk)

    def get_serving_version(self, deployment: Deployment) -> int | None:
        found = serving_revision(recent_revisions(deployment))
        return found.version if found else None

    def get_alias_version(self, deployment: Deployment) -> int | None:
        return self._alias_version(deployment)

    def get_drift(self, deployment: Deployment) -> bool:
        return drift_of(deployment, recent_revisions(deployment), self._alias_version(deployment))

    def get_url(self, deployment: Deployment) -> str:
        path = gateway_path(deployment)
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(RevisionSerializer(many=True))
    def get_revisions(self, deployment: Deployment) -> list[dict[str, Any]]:
        revisions = recent_revisions(deployment)
        live = [r for r in revisions if r.status != RevisionStatus.RETIRED]
        shown = (
            live + [r for r in revisions if r.status == RevisionStatus.RETIRED][: max(0, REVISIONS_SHOWN - len(live))]
        )
        shown.sort(key=lambda r: -r.number)
        return list(RevisionSerializer(shown, many=True).data)


class DeploymentWriteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """PATCH: any of these. The services check bounds: canary_percent 0..100,
    canary_minutes 0..1440, max_error_rate 0..1 (a fraction), max_p95_ms 1..600000,
    replicas 0..20 (max ≥ min, ≥ 1); `alias` and `version` exclusive (`version: null` unpins)."""

    alias = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=255)
    version = serializers.IntegerField(required=False, allow_null=True)
    canary_percent = serializers.IntegerField(required=False)
    canary_minutes = serializers.FloatField(required=False)
    max_error_rate = serializers.FloatField(required=False)
    max_p95_ms = serializers.IntegerField(required=False)
    min_replicas = serializers.IntegerField(required=False)
    max_replicas = serializers.IntegerField(required=False)
    resources = serializers.JSONField(required=False, help_text='{"cpu": "1", "memory": "2Gi"}')
    input_example = serializers.JSONField(
        required=False, allow_null=True, help_text="A request in MLflow's scoring protocol (e.g. dataframe_split)."
    )
    capture_samples = serializers.BooleanField(required=False)
    environment = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="An environment's id (one you may use, ready or deprecated); null: serve in the one the "
        "training run recorded. Changing it starts a new revision of the served version.",
    )


class DeploymentCreateSerializer(DeploymentWriteSerializer):
    """POST: a project (id or team/project), a DNS-safe name, a registered model of the
    project, and optionally the alias to follow (default champion) or a version to pin."""

    project = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=100)
    model = serializers.CharField(max_length=256)
    backend = serializers.CharField(required=False, max_length=16, help_text="The project's; any other is a 400.")


class RevisionMetricsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    traffic = serializers.IntegerField()
    is_canary = serializers.BooleanField()
    requests = serializers.IntegerField()
    errors_4xx = serializers.IntegerField()
    errors_5xx = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True, help_text="5xx / requests; null without requests")
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)


class DeploymentMetricsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    deployment = serializers.IntegerField()
    minutes = serializers.IntegerField()
    since = serializers.DateTimeField()
    revisions = RevisionMetricsSerializer(many=True)

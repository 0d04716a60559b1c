"""Deployments: a registered model served behind a stable URL, rolled out revision by
revision.

A deployment follows an alias of a registered model of its project (or pins a version).
Every model version it serves is a `Revision` with its own status and traffic share; a
rollout is: new revision → pre-flight (the model loads and predicts on its input example)
→ canary share → health compared with the limits → 100 % or automatic rollback. The
intent is in these rows; Celery tasks and a reconciler make the serving backend match them
(the launch pattern, see ARCHITECTURE.md)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.projects.models import Project

# A DNS-1035 label (a Kubernetes Service / KServe InferenceService name): lowercase letters,
# digits and hyphens, starting with a letter, ending with a letter or digit, at most 45
# characters so that KServe's generated names ("<name>-predictor-…") stay under 63.
deployment_name_validator = RegexValidator(
    r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$",
    "A deployment name is 1 to 45 lowercase letters, digits and hyphens, starting with a letter "
    "and not ending with a hyphen.",
)


class DeploymentStatus(models.TextChoices):
    STARTING = "starting", "Starting"  # no revision serves yet
    SERVING = "serving", "Serving"  # a revision takes traffic, no rollout in flight
    ROLLING_OUT = "rolling_out", "Rolling out"  # a new revision is in pre-flight or canary
    FAILED = "failed", "Failed"  # nothing serves (the first revision failed)
    DELETING = "deleting", "Deleting"  # asked to go; the row goes once the backend is clean


class Deployment(models.Model):
    """One served model of a project.

    `alias` (default `champion`) is followed: whenever it points at a new version, a rollout
    starts. `pinned_version` set instead means the deployment serves that version and
    ignores the alias (drift is then shown when the alias points elsewhere). Rollout policy:
    `canary_percent` of requests go to a new revision for `canary_minutes`; it is promoted
    when its error rate ≤ `max_error_rate` (a fraction, 0.05 = 5 %) and its p95 latency
    ≤ `max_p95_ms`, else rolled back automatically."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=45, validators=[deployment_name_validator])
    model_name = models.CharField(max_length=256)  # an MLflow registered model of the project
    alias = models.CharField(max_length=256, blank=True, default="champion")
    pinned_version = models.PositiveIntegerField(null=True, blank=True)
    backend = models.CharField(max_length=16)  # the project's backend when created: local | kubernetes
    min_replicas = models.PositiveSmallIntegerField(default=1, validators=[MaxValueValidator(20)])
    max_replicas = models.PositiveSmallIntegerField(default=1, validators=[MaxValueValidator(20)])
    resources = models.JSONField(default=dict, blank=True)  # {"cpu": "1", "memory": "2Gi"}
    canary_percent = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    canary_minutes = models.FloatField(default=5.0, validators=[MinValueValidator(0), MaxValueValidator(1440)])
    max_error_rate = models.FloatField(default=0.05, validators=[MinValueValidator(0), MaxValueValidator(1)])
    max_p95_ms = models.PositiveIntegerField(default=1000, validators=[MinValueValidator(1)])
    # A request body in MLflow's scoring protocol, used by pre-flight and "try it" when the
    # model logged no serving_input_example.json. Null: use the model's own.
    input_example = models.JSONField(null=True, blank=True)
    capture_samples = models.BooleanField(default=False)  # keep a capped sample of requests/answers
    # The environment it serves in. Null: the one the served version's training run recorded
    # (its `plinth.environment` tag), else the project's.
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    status = models.CharField(max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.STARTING)
    status_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["Deployment"].as_manager()
    access_scope = TeamScope("project__team")

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="deployment_name_unique_in_project"),
            models.CheckConstraint(
                condition=~(Q(alias="") & Q(pinned_version__isnull=True)),
                name="deployment_follows_an_alias_or_pins_a_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project}/{self.name}"


class RevisionStatus(models.TextChoices):
    STARTING = "starting", "Starting"  # model server starting, pre-flight not passed yet
    READY = "ready", "Ready"  # pre-flight passed; warm, 0 % traffic (new, or kept for rollback)
    SERVING = "serving", "Serving"  # takes a share of the traffic (canary or stable)
    RETIRED = "retired", "Retired"  # stopped; never takes traffic again
    FAILED = "failed", "Failed"  # pre-flight or the canary failed; `reason` says why


LIVE_REVISION_STATUSES = (RevisionStatus.STARTING, RevisionStatus.READY, RevisionStatus.SERVING)


class Revision(models.Model):
    """One model version served by a deployment. Always a concrete version, never `@alias`.

    `traffic` is the percentage of requests routed to it (0 to 100); the serving revisions of
    a deployment sum to 100 (or all 0 while nothing serves). `endpoint` is where the
    gateway sends its requests (local: http://127.0.0.1:<port>; kubernetes: the
    InferenceService's URL); `pid`/`port` are the local backend's model-server process."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()  # 1, 2, 3 … within the deployment
    version = models.PositiveIntegerField()  # the MLflow model version
    run_id = models.CharField(max_length=64, blank=True)  # the version's source run, when known
    # The environment this revision serves in (resolved when it started).
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="revisions"
    )
    status = models.CharField(max_length=16, choices=RevisionStatus.choices, default=RevisionStatus.STARTING)
    reason = models.TextField(blank=True)
    traffic = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    is_canary = models.BooleanField(default=False)
    endpoint = models.CharField(max_length=300, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )  # null: started by a rule (the alias moved in MLflow)
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    canary_started_at = models.DateTimeField(null=True, blank=True)
    serving_at = models.DateTimeField(null=True, blank=True)  # took 100 %
    retired_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet["Revision"].as_manager()
    access_scope = TeamScope("deployment__project__team")

    class Meta:
        ordering = ["deployment_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "number"], name="revision_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment.name} r{self.number} (v{self.version})"


class RolloutStep(models.TextChoices):
    STARTED = "started", "Revision started"
    PREFLIGHT_PASSED = "preflight_passed", "Pre-flight passed"
    PREFLIGHT_FAILED = "preflight_failed", "Pre-flight failed"
    CANARY = "canary", "Canary"
    PROMOTED = "promoted", "Promoted"
    ROLLED_BACK = "rolled_back", "Rolled back"
    RESTARTED = "restarted", "Model server restarted"
    RETIRED = "retired", "Retired"


class RolloutEvent(models.Model):
    """One line of a deployment's rollout timeline: what happened to which revision, by
    whom (`actor`) or by which rule (`rule`, e.g. "canary error rate 0.31 > 0.05")."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    revision = models.ForeignKey(Revision, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    step = models.CharField(max_length=20, choices=RolloutStep.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    message = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["RolloutEvent"].as_manager()
    access_scope = TeamScope("deployment__project__team")

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment.name}: {self.get_step_display()}"


class ServingKey(models.Model):
    """A per-deployment key that callers of the gateway present instead of a user's API
    token (`Authorization: Bearer <key>`). Only a hash is stored; the key is shown once."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=12, db_index=True)
    digest = models.CharField(max_length=128)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet["ServingKey"].as_manager()
    access_scope = TeamScope("deployment__project__team")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "name"], name="serving_key_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment.name}: {self.name}"


# Latency histogram bucket upper bounds in milliseconds (the last bucket is +inf), the
# same shape as Prometheus' default HTTP buckets scaled to ms.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class RequestStats(models.Model):
    """Requests one gateway process (`writer`, "host:pid") forwarded to one revision in one
    minute: counts, 4xx and 5xx, total latency and a histogram over LATENCY_BUCKETS_MS
    (len + 1 counts, the last one above 10 s). Each process buffers in memory and rewrites
    its own row with its running totals for the minute (idempotent, no contention between
    processes); readers sum the rows of all writers."""

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="stats")
    minute = models.DateTimeField()
    writer = models.CharField(max_length=80)
    requests = models.PositiveIntegerField(default=0)
    errors_4xx = models.PositiveIntegerField(default=0)
    errors_5xx = models.PositiveIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0.0)
    latency_buckets = models.JSONField(default=list)

    class Meta:
        ordering = ["revision_id", "minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["revision", "minute", "writer"], name="request_stats_one_row_per_writer_minute"
            ),
        ]

    def __str__(self) -> str:
        return f"revision {self.revision_id} at {self.minute:%Y-%m-%d %H:%M} ({self.writer})"


class RequestSample(models.Model):
    """A captured request/response pair (off by default, size-limited, never headers)."""

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField()
    request_body = models.TextField()
    response_body = models.TextField()

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"revision {self.revision_id} at {self.at:%Y-%m-%d %H:%M:%S}: {self.status_code}"

"""GPUs: the inventory, utilization history (1-minute samples and hourly roll-ups), idle
policies per project, exemptions per launch, idle findings, prices and source health.

History columns that point at launches, projects and teams are foreign keys without a
database constraint: samples are written in bulk every minute and kept for weeks, they
must never block (or be cascaded by) a change elsewhere, and like audit events they
outlive what they describe."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.accounts.models import Team
from apps.launches.models import Launch
from apps.projects.models import Project


def resolution_seconds() -> int:
    """The sampler's resolution: one sample per GPU per this many seconds (default 60)."""
    return max(10, int(settings.PLINTH_GPU_SAMPLE_SECONDS))


def default_threshold() -> float:
    return float(settings.PLINTH_GPU_IDLE_THRESHOLD)


def default_window() -> int:
    return int(settings.PLINTH_GPU_IDLE_WINDOW_MINUTES)


def default_grace() -> int:
    return int(settings.PLINTH_GPU_IDLE_GRACE_MINUTES)


def _history_fk(model: Any) -> Any:
    # No single-column index either: the tables' own composite indexes serve the reads, and
    # every index is paid for on each of the 720,000 inserts a day.
    return models.ForeignKey(
        model, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )


class GpuQuerySet(ScopedQuerySet["Gpu"]):
    def present(self) -> GpuQuerySet:
        return self.filter(present=True)


class Gpu(models.Model):
    """One GPU, known by its node and index on that node, as the last sampler pass saw it:
    which sources report it, who holds it, and its latest readings."""

    node = models.CharField(max_length=253)
    index = models.PositiveIntegerField()
    uuid = models.CharField(max_length=100, blank=True)
    # NVIDIA's product name (the `nvidia.com/gpu.product` node label, NVML's device name).
    product = models.CharField(max_length=120, blank=True)
    memory_total_mib = models.PositiveIntegerField(default=0)
    sources = models.CharField(max_length=60, blank=True)  # "kubernetes,prometheus"
    schedulable = models.BooleanField(default=True)
    present = models.BooleanField(default=True)  # False: the last pass no longer saw it
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # Who holds it now. A pod Plinth did not launch has only a namespace and a pod name.
    allocated = models.BooleanField(default=False)
    launch = models.ForeignKey(Launch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    namespace = models.CharField(max_length=63, blank=True)
    pod = models.CharField(max_length=253, blank=True)
    # The latest readings (None: no source measures this GPU).
    utilization = models.FloatField(null=True, blank=True)
    memory_used_mib = models.IntegerField(null=True, blank=True)
    power_w = models.FloatField(null=True, blank=True)
    engine_active = models.FloatField(null=True, blank=True)
    sampled_at = models.DateTimeField(null=True, blank=True)

    objects = GpuQuerySet.as_manager()
    # Platform admins see the whole fleet; everyone else sees free GPUs and the GPUs held by
    # teams they may act in (who holds the rest is not theirs to know).
    access_scope = TeamScope("team", shared=Q(allocated=False))

    class Meta:
        ordering = ["node", "index"]
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="gpu_node_index_unique")]
        indexes = [models.Index(fields=["team", "allocated"])]

    def __str__(self) -> str:
        return f"{self.node}/{self.index}"

    @property
    def label(self) -> str:
        return f"{self.node}/{self.index}"


class GpuSample(models.Model):
    """One reading of one GPU at one instant of the sampler's grid (default: every minute),
    with who held the GPU then. Kept for PLINTH_GPU_RAW_RETENTION_DAYS (7), after which only
    the hourly roll-ups remain. Written in bulk by apps.gpus.store.insert_samples."""

    # (gpu, at) is the key: no surrogate id (and its AUTOINCREMENT bookkeeping) on a table
    # that grows by a row per GPU per minute, and a second pass in a minute is a conflict.
    pk = models.CompositePrimaryKey("gpu", "at")
    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, db_index=False, related_name="+")
    at = models.DateTimeField()
    utilization = models.FloatField(null=True)
    memory_used_mib = models.IntegerField(null=True)
    power_w = models.FloatField(null=True)
    engine_active = models.FloatField(null=True)
    allocated = models.BooleanField(default=False)
    launch = _history_fk(Launch)
    project = _history_fk(Project)
    team = _history_fk(Team)
    namespace = models.CharField(max_length=63, blank=True, default="")

    class Meta:
        # Reads go by time (roll-ups, the hour being filled) or by GPU and time (a launch's
        # GPUs): two indexes in all, so a pass's inserts stay cheap.
        indexes = [models.Index(fields=["at"])]

    def __str__(self) -> str:
        return f"{self.gpu_id} at {self.at:%Y-%m-%d %H:%M}: {self.utilization}"


# Covering indexes of the roll-ups: every column the usage report, its timeline and the
# heatmap read, so those reads never touch the table. Roll-ups are written once an hour, so
# wide indexes cost nothing that matters.
BY_HOUR = (
    "hour",
    "allocated",
    "team",
    "project",
    "namespace",
    "gpu",
    "seconds",
    "used_seconds",
    "util_samples",
    "util_sum",
)
BY_TEAM = ("team", "hour", "allocated", "project", "namespace", "gpu", "seconds", "used_seconds", "util_samples")


class GpuHourly(models.Model):
    """The samples of one GPU in one hour, per holder (usually one row per GPU-hour; two when
    the GPU changed hands within the hour). Sums, not averages, so that any range adds up:
    GPU-hours allocated = Σ seconds of allocated rows / 3600, GPU-hours used = Σ used_seconds
    / 3600, where used_seconds = Σ utilization/100 x the resolution."""

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, db_index=False, related_name="+")
    hour = models.DateTimeField()
    allocated = models.BooleanField(default=False)
    launch = _history_fk(Launch)
    project = _history_fk(Project)
    team = _history_fk(Team)
    namespace = models.CharField(max_length=63, blank=True, default="")
    samples = models.PositiveIntegerField(default=0)
    seconds = models.PositiveIntegerField(default=0)
    util_samples = models.PositiveIntegerField(default=0)
    util_sum = models.FloatField(default=0)
    util_max = models.FloatField(null=True)
    used_seconds = models.FloatField(default=0)
    mem_samples = models.PositiveIntegerField(default=0)
    mem_sum = models.FloatField(default=0)
    mem_max = models.IntegerField(null=True)
    power_samples = models.PositiveIntegerField(default=0)
    power_sum = models.FloatField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=list(BY_HOUR), name="gpuhourly_by_hour"),
            models.Index(fields=list(BY_TEAM), name="gpuhourly_by_team"),
            models.Index(fields=["launch", "hour"]),
        ]

    def __str__(self) -> str:
        return f"{self.gpu_id} in {self.hour:%Y-%m-%d %H:00}"


class IdlePolicy(models.Model):
    """How a project treats allocated GPUs that sit idle: under `threshold_percent`
    utilization for `window_minutes` is idle; the owner is told (`notify`); with `reclaim`,
    the launch is cancelled `grace_minutes` after that unless it got busy or exempt.
    Projects without a row follow the defaults (5 %, 30 min, notify, no reclaim, 60 min)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="idle_policy")
    threshold_percent = models.FloatField(
        default=default_threshold, validators=[MinValueValidator(0.0), MaxValueValidator(100.0)]
    )
    window_minutes = models.PositiveIntegerField(
        default=default_window, validators=[MinValueValidator(5), MaxValueValidator(7 * 24 * 60)]
    )
    notify = models.BooleanField(default=True)
    reclaim = models.BooleanField(default=False)
    grace_minutes = models.PositiveIntegerField(
        default=default_grace, validators=[MinValueValidator(0), MaxValueValidator(7 * 24 * 60)]
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"idle policy of {self.project_id}"

    @classmethod
    def defaults(cls, project: Project | None = None) -> IdlePolicy:
        """The policy a project without a row follows (unsaved)."""
        policy = cls()  # the field defaults read the settings
        if project is not None:
            policy.project = project
        return policy

    def as_audit(self) -> dict[str, Any]:
        return {
            "threshold_percent": self.threshold_percent,
            "window_minutes": self.window_minutes,
            "notify": self.notify,
            "reclaim": self.reclaim,
            "grace_minutes": self.grace_minutes,
        }

    def describe(self) -> str:
        text = f"under {self.threshold_percent:g} % for {self.window_minutes} min"
        if self.reclaim:
            text += f"; reclaimed {self.grace_minutes} min after notice"
        return text


class IdleExemption(models.Model):
    """A lead's word that a launch may hold GPUs idle (a debugging session, a job waiting on
    data): no notices, no reclaim, until `expires_at` (never, when empty)."""

    launch = models.OneToOneField(Launch, on_delete=models.CASCADE, related_name="idle_exemption")
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"exemption of launch {self.launch_id}"

    def is_active(self, now: datetime | None = None) -> bool:
        return self.expires_at is None or self.expires_at > (now or timezone.now())


class FindingStatus(models.TextChoices):
    OPEN = "open", "Idle"
    NOTIFIED = "notified", "Idle, owner told"
    EXEMPT = "exempt", "Idle, exempt"
    RECLAIMED = "reclaimed", "Reclaimed"
    RESOLVED = "resolved", "Resolved"


ACTIVE_FINDINGS = (FindingStatus.OPEN, FindingStatus.NOTIFIED, FindingStatus.EXEMPT)


class IdleFindingQuerySet(ScopedQuerySet["IdleFinding"]):
    def active(self) -> IdleFindingQuerySet:
        return self.filter(status__in=ACTIVE_FINDINGS)


class IdleFinding(models.Model):
    """One allocated GPU found under its policy's threshold for the whole window: who holds
    it, since when, and what was done (owner told, reclaimed, exempt, or resolved when the
    GPU got busy or was released). At most one active finding per GPU."""

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="idle_findings")
    launch = models.ForeignKey(Launch, null=True, blank=True, on_delete=models.CASCADE, related_name="idle_findings")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    namespace = models.CharField(max_length=63, blank=True)
    pod = models.CharField(max_length=253, blank=True)
    status = models.CharField(max_length=12, choices=FindingStatus.choices, default=FindingStatus.OPEN)
    idle_since = models.DateTimeField()
    checked_at = models.DateTimeField(default=timezone.now)
    peak_utilization = models.FloatField(default=0)  # the highest reading in the last window
    threshold_percent = models.FloatField(default=5)
    window_minutes = models.PositiveIntegerField(default=30)
    created_at = models.DateTimeField(default=timezone.now)
    notified_at = models.DateTimeField(null=True, blank=True)
    reclaimed_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True)

    objects = IdleFindingQuerySet.as_manager()
    # Platform admins see every finding (pods Plinth did not launch too); others the
    # findings of their teams' projects.
    access_scope = TeamScope("team")

    class Meta:
        ordering = ["idle_since", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu"], condition=Q(status__in=ACTIVE_FINDINGS), name="one_active_idle_finding_per_gpu"
            )
        ]
        indexes = [models.Index(fields=["status", "team"])]

    def __str__(self) -> str:
        return f"idle {self.gpu_id} since {self.idle_since:%Y-%m-%d %H:%M}"

    @property
    def idle_for(self) -> timedelta:
        end = self.resolved_at or self.reclaimed_at or self.checked_at
        return max(end - self.idle_since, timedelta(0))

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_FINDINGS


class GpuPrice(models.Model):
    """What one GPU-hour of a GPU product costs, for the usage report (set by platform admins)."""

    product = models.CharField(max_length=120, unique=True)
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4, validators=[MinValueValidator(0)])
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["product"]

    def __str__(self) -> str:
        return f"{self.product}: {self.price_per_hour}/GPU-hour"


class SourceStatus(models.Model):
    """How each source (prometheus, kubernetes, nvml) answered the last sampler pass, and the
    marks of the periodic jobs ("sampler": the last pass; "rollup": hours rolled up until)."""

    name = models.CharField(max_length=20, unique=True)
    configured = models.BooleanField(default=False)
    ok = models.BooleanField(default=False)
    message = models.TextField(blank=True)
    gpus = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)
    checked_at = models.DateTimeField(default=timezone.now)
    mark = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: {'ok' if self.ok else self.message or 'not ok'}"

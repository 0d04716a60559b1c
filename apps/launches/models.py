"""Templates, launches and sweeps: from an idea to a running job without writing a manifest."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.accounts.models import Team, slug_validator
from apps.projects.models import Project


class ParamType(models.TextChoices):
    INT = "int", "Integer"
    FLOAT = "float", "Number"
    STR = "str", "Text"
    BOOL = "bool", "Yes/no"
    CHOICE = "choice", "Choice"


class Template(models.Model):
    """A reusable job: image, command (an argument list, never a shell string), typed
    parameters with defaults and bounds, default and maximum resources, a run-time limit
    and the backends it supports. `team` empty = global (platform admins manage it).

    parameters: {name: {"type": int|float|str|bool|choice, "default": v, "min": n,
                 "max": n, "choices": [...], "help": "..."}}
    resources:  {"cpu": "1", "memory": "2Gi", "gpus": 0, "gpu_product": ""}
    """

    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="templates")
    slug = models.SlugField(max_length=40, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    image = models.CharField(max_length=300)
    command = models.JSONField(default=list)
    parameters = models.JSONField(default=dict, blank=True)
    default_resources = models.JSONField(default=dict, blank=True)
    max_resources = models.JSONField(default=dict, blank=True)
    max_runtime_seconds = models.PositiveIntegerField(default=3600)
    backends = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    # Pinned environment: launches from this template run in it whatever their project's default.
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="templates"
    )
    # The objective a sweep over this template starts from: {"metric": name, "direction":
    # "min" | "max"} — a metric the script logs at every step, so early stopping can act.
    # Empty: the sweep form proposes its general default (accuracy, higher is better).
    objective = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet["Template"].as_manager()
    # Global templates (no team) are for every signed-in user to use; changing one needs a
    # platform admin.
    access_scope = TeamScope("team", shared=Q(team__isnull=True))

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(fields=["team", "slug"], name="template_slug_unique_in_team"),
            models.UniqueConstraint(fields=["slug"], condition=Q(team__isnull=True), name="global_template_slug"),
        ]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.slug}" if self.team is not None else self.slug


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    SUBMITTING = "submitting", "Submitting"
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"
    # A sweep trial stopped early by the sweep's pruner (its reason says which rule); terminal.
    PRUNED = "pruned", "Pruned"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.PRUNED})
LIVE = frozenset(set(Status.values) - TERMINAL)

# Allowed transitions; anything else is a bug or a stale observation and is ignored.
TRANSITIONS: dict[str, set[str]] = {
    Status.QUEUED: {Status.SUBMITTING, Status.CANCELLED, Status.FAILED},
    Status.SUBMITTING: {
        Status.PENDING,
        Status.RUNNING,
        Status.QUEUED,
        Status.FAILED,
        Status.CANCELLING,
        Status.SUCCEEDED,
    },
    Status.PENDING: {Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.CANCELLING, Status.CANCELLED},
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLING, Status.CANCELLED, Status.PRUNED},
    Status.CANCELLING: {Status.CANCELLED, Status.SUCCEEDED, Status.FAILED, Status.PRUNED},
}


class LaunchQuerySet(ScopedQuerySet["Launch"]):
    def live(self) -> LaunchQuerySet:
        return self.filter(status__in=LIVE)


class Launch(models.Model):
    """One job run from a template in a project, with its MLflow run."""

    # Not stored: set by services.create_launch on the launch it returns — what the person
    # who launched it should read about its environment (deprecated, redirected).
    environment_warnings: list[str] | tuple[str, ...] = ()

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="launches")
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="launches")
    # The concrete environment version it ran in (recorded at creation; null on rows older
    # than environments, which ran in the portal's own interpreter or the template's image).
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="launches"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="launches")
    sweep = models.ForeignKey("Sweep", null=True, blank=True, on_delete=models.PROTECT, related_name="trials")
    # Which of the sweep's planned trials this is (its index in `Sweep.planned`): unique per
    # sweep, so two passes of `advance` racing for the same trial cannot both start it.
    trial = models.PositiveIntegerField(null=True, blank=True)
    name = models.CharField(max_length=120, blank=True)
    parameters = models.JSONField(default=dict)
    resources = models.JSONField(default=dict)
    # A column of its own (not only in `resources`) so quota sums run in the database.
    gpus = models.PositiveIntegerField(default=0)
    backend = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    status_reason = models.TextField(blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    mlflow_closed = models.BooleanField(default=False)
    submit_attempts = models.PositiveIntegerField(default=0)
    # When the reconciler may try a submit the backend could not take again (apps.core.retry);
    # empty while a submit is in flight or none failed.
    next_submit_at = models.DateTimeField(null=True, blank=True)
    max_runtime_seconds = models.PositiveIntegerField(default=3600)
    # A sweep trial's objective (the sweep's metric), for the optimiser and early stopping
    # (apps.launches.optimizer): the final value once read from MLflow (`objective_state`:
    # "" unread, ok, missing, invalid = NaN/inf) and the step-wise curve {"step": value}.
    objective = models.FloatField(null=True, blank=True)
    objective_state = models.CharField(max_length=8, blank=True)
    objective_curve = models.JSONField(default=dict, blank=True)
    # Why the sweep's pruner stopped this trial: set with the cancel it asks for, so the
    # cancel ends `pruned` (with this as its reason) rather than `cancelled`.
    prune_reason = models.TextField(blank=True)
    # local backend bookkeeping: which host runs it, the process group, the GPUs handed out
    local_host = models.CharField(max_length=200, blank=True)
    local_pid = models.IntegerField(null=True, blank=True)
    gpu_devices = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LaunchQuerySet.as_manager()
    access_scope = TeamScope("project__team")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["backend", "status"]), models.Index(fields=["project", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["sweep", "trial"], condition=Q(sweep__isnull=False), name="launch_trial_unique_in_sweep"
            ),
        ]

    def __str__(self) -> str:
        if self.name and self.name != self.job_name:
            return f"{self.name} ({self.job_name})"
        return self.job_name

    @property
    def job_name(self) -> str:
        """Deterministic name on the backend: resubmitting after a crash is safe."""
        return f"plinth-{self.pk}"

    @property
    def display_name(self) -> str:
        """The name people read on every page: the launch's own name (its MLflow run's name,
        the template's slug when none was given, "<sweep> trial N" for a sweep's trial), or
        the job name on rows made before names were recorded."""
        return self.name or self.job_name

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def can_transition_to(self, status: str) -> bool:
        return status in TRANSITIONS.get(self.status, set())

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class SweepStrategy(models.TextChoices):
    GRID = "grid", "Grid"
    RANDOM = "random", "Random"
    BAYES = "bayes", "Bayesian (TPE)"
    CMAES = "cmaes", "CMA-ES"


class SweepStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Sweep(models.Model):
    """A search over a template's parameters: the trials are launches, started
    `parallelism` at a time as earlier ones end. Grid and random sweeps plan every trial up
    front; bayes and cmaes append each trial to `planned` as Optuna asks for it."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="sweeps")
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="sweeps")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sweeps")
    name = models.CharField(max_length=120, blank=True)
    strategy = models.CharField(max_length=8, choices=SweepStrategy.choices)
    space = models.JSONField()
    base_parameters = models.JSONField(default=dict)
    resources = models.JSONField(default=dict)
    planned = models.JSONField(default=list)  # the parameter sets of every trial, in order
    max_trials = models.PositiveIntegerField()
    parallelism = models.PositiveIntegerField()
    metric = models.CharField(max_length=120, blank=True)
    direction = models.CharField(max_length=3, default="max", choices=[("max", "max"), ("min", "min")])
    seed = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=SweepStatus.choices, default=SweepStatus.RUNNING)
    status_reason = models.TextField(blank=True)
    mlflow_parent_run_id = models.CharField(max_length=64, blank=True)
    # {"type": "median" | "asha" | "hyperband", "min_steps": n, ...}; empty: every trial runs to its end.
    early_stopping = models.JSONField(default=dict, blank=True)
    # The Kubernetes Indexed Job that runs every trial of this sweep (one cluster workload
    # per grid/random sweep); empty: one Job per trial.
    workload = models.CharField(max_length=63, blank=True)
    # What Optuna's sampler or pruner recorded on each trial ({"index": {key: value}}: CMA-ES's
    # state, ASHA's rungs), so the study rebuilt from these rows is the study it was.
    trial_attrs = models.JSONField(default=dict, blank=True)
    # Each trial gets its own value of the template's `seed` parameter (apps.launches.sweeps.
    # assign_seeds): decided when the sweep is created, used again for trials planned later.
    seeded = models.BooleanField(default=False)
    # The environment version every trial runs in, resolved once when the sweep is created
    # (null on sweeps older than environments: their trials took the first trial's).
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="sweeps"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet["Sweep"].as_manager()
    access_scope = TeamScope("project__team")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}" if self.name else self.display_name

    def trial_name(self, index: int) -> str:
        """Trial `index`'s (0-based) launch and MLflow run name, "<sweep> #<id> trial N"
        (N from 1), at most 120 characters (Launch.name): a long sweep name is cut, never
        the part that tells the trials apart."""
        suffix = f" #{self.pk} trial {index + 1}"
        return f"{self.display_name[: 120 - len(suffix)]}{suffix}"

    @property
    def display_name(self) -> str:
        """The sweep's name (its MLflow parent run's; "sweep of <template>" when none was
        given), or `sweep-<id>` on rows made before names were recorded; its trials are
        "<this> #<id> trial N" everywhere (`trial_name`)."""
        return self.name or f"sweep-{self.pk}"

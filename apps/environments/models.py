"""Standard environments: what a launch runs in and a deployment serves in.

An `Environment` is a named, numbered version (`sklearn-1.7` version 1, shown
`sklearn-1.7:1`). Its content is immutable once saved: a change is a new version of the
same name. It carries, for the Kubernetes backend, an image reference (pinned by digest
where given) and pod defaults; for the local backend, a Python requirements list that Plinth
builds into a virtual environment of its own under the data directory (an
`EnvironmentBuild`, shared by every environment whose normalised list hashes the same).

Life cycle (`state`): building → ready → deprecated → retired, or failed when its build
failed (never selectable). A deprecated environment names its replacement and a message;
with `redirect` set, new launches that ask for it run in the replacement instead. A retired
one refuses new launches and deployments, naming the replacement.

`team` empty = platform-wide (platform admins manage it, every signed-in user may use it);
set = that team's own (its leads manage it, its members use it). Kubeflow's workspace kinds
(curated image options with hidden/redirected old versions) and Determined's environment
images with pod-spec defaults are the models for this.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.accounts.models import Team

# Lower-case letters, digits, hyphens and dots, starting and ending with a letter or digit,
# at most 63 (`sklearn-1.7`); the same rule as apps.environments.validation.NAME_RE.
environment_name_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?\Z",
    "Use lower-case letters, digits, hyphens and dots (at most 63), e.g. sklearn-1.7.",
)


class EnvironmentState(models.TextChoices):
    BUILDING = "building", "Building"  # its local build is queued or running
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"  # its build failed: never selectable
    DEPRECATED = "deprecated", "Deprecated"  # still usable, warns (or redirects) and names its replacement
    RETIRED = "retired", "Retired"  # refused for new launches and deployments


SELECTABLE_STATES = (EnvironmentState.READY, EnvironmentState.DEPRECATED)


class BuildStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    BUILDING = "building", "Building"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class EnvironmentBuild(models.Model):
    """One local virtual environment, built once per distinct requirements list.

    `requirements_hash` is the sha256 of the normalised list (one requirement per line,
    comments and blank lines dropped, sorted, lower-cased names); identical lists share one
    build. The venv lives in `path` (under `<data dir>/environments/`); it is written to a
    temporary folder and renamed into place only when the install succeeded, so a failed or
    interrupted build is never half-used. `log` is the installer's output (its tail when
    long); `packages` is what the built interpreter can import, {distribution name: version}
    (the portal's own packages included when the build extends them). `progress` is 0 to 100."""

    requirements_hash = models.CharField(max_length=64, unique=True)
    requirements = models.TextField(blank=True)  # the normalised list
    status = models.CharField(max_length=16, choices=BuildStatus.choices, default=BuildStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    step = models.CharField(max_length=200, blank=True)  # what it is doing now, one line
    log = models.TextField(blank=True)
    path = models.CharField(max_length=500, blank=True)  # the venv's folder once ready
    python = models.CharField(max_length=500, blank=True)  # its interpreter once ready
    packages = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    lease_token = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"build {self.requirements_hash[:12]} ({self.status})"


class Environment(models.Model):
    """A versioned standard environment (see the module docstring).

    pod_defaults: {"node_selector": {key: value}, "tolerations": [core/v1 Toleration as a
                   dict], "env": {NAME: value}} — merged into every Job and InferenceService
                   pod that runs in it (the template's or deployment's own values win).
    requirements: the local backend's requirements, one per line (pip syntax).
    extends_portal: the local build sees the portal's own packages (a `.pth` link to the
                    portal's site-packages) under its own, so a small list adds to them;
                    off = a bare interpreter with only the listed packages.
    `build` is null for an environment with no local part (image only) and for the
    portal's own interpreter (`is_portal`: the platform's first default, no build)."""

    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="environments")
    name = models.CharField(max_length=63, validators=[environment_name_validator])
    version = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    description = models.TextField(blank=True)
    image = models.CharField(max_length=500, blank=True)
    pod_defaults = models.JSONField(default=dict, blank=True)
    requirements = models.TextField(blank=True)
    extends_portal = models.BooleanField(default=True)
    is_portal = models.BooleanField(default=False)
    build = models.ForeignKey(
        EnvironmentBuild, null=True, blank=True, on_delete=models.PROTECT, related_name="environments"
    )
    state = models.CharField(max_length=16, choices=EnvironmentState.choices, default=EnvironmentState.BUILDING)
    state_reason = models.TextField(blank=True)
    replaced_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="replaces")
    redirect = models.BooleanField(default=False)  # deprecated: new launches run in replaced_by instead
    message = models.TextField(blank=True)  # the deprecation/retirement message shown to users
    is_default = models.BooleanField(default=False)  # the platform default for new projects
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["Environment"].as_manager()
    # Platform-wide environments (no team) are for every signed-in user to use; changing
    # one needs a platform admin. A team's own are its members' to use, its leads' to manage.
    access_scope = TeamScope("team", shared=Q(team__isnull=True))

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name", "version"], name="environment_version_unique_in_team"),
            models.UniqueConstraint(
                fields=["name", "version"], condition=Q(team__isnull=True), name="global_environment_version"
            ),
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_environment"
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """`name:version`, prefixed with the team's slug for a team's own (`vision/cv-base:2`).
        The value of a launch's `plinth.environment` MLflow tag."""
        base = f"{self.name}:{self.version}"
        return f"{self.team.slug}/{base}" if self.team is not None else base

    @property
    def is_selectable(self) -> bool:
        """New launches and deployments may name it (ready or deprecated)."""
        return self.state in SELECTABLE_STATES

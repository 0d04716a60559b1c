"""Projects: a team's unit of work, bound to a compute backend, a Kubernetes namespace and
an MLflow experiment."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.accounts.models import Team, slug_validator

namespace_validator = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    "A Kubernetes namespace is at most 63 lowercase letters, digits and hyphens.",
)


# Tags on the experiments Plinth creates (apps.projects.services.link_experiment).
EXPERIMENT_TEAM_TAG = "plinth.team"
EXPERIMENT_PROJECT_TAG = "plinth.project"


class Backend(models.TextChoices):
    LOCAL = "local", "Local (worker host)"
    KUBERNETES = "kubernetes", "Kubernetes"


def default_backend() -> str:
    """The backend of a new project: `PLINTH_DEFAULT_BACKEND` (local or kubernetes; anything
    else falls back to local, which needs no cluster)."""
    value = str(settings.PLINTH_DEFAULT_BACKEND or "").strip().lower()
    return value if value in Backend.values else Backend.LOCAL


class ExperimentState(models.TextChoices):
    PENDING = "pending", "Waiting for MLflow"
    LINKED = "linked", "Linked"
    FAILED = "failed", "Failed"
    # The name belongs to an MLflow experiment Plinth did not create for this project (or one
    # another project holds): attaching it is a platform admin's decision, never silent.
    REFUSED = "refused", "Refused: the experiment is not this project's"
    # Linked once, then deleted in MLflow (found by the reconciler or refused by MLflow):
    # nothing is logged or launched until it is restored, re-linked or replaced.
    DELETED = "deleted", "Deleted in MLflow"


class Project(models.Model):
    """A team-owned project. `gpu_quota` caps the GPUs of its live launches; the sum of a
    team's quotas stays within the team's `gpu_budget`."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="projects")
    slug = models.SlugField(max_length=40, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    gpu_quota = models.PositiveIntegerField(default=0)
    backend = models.CharField(max_length=16, choices=Backend.choices, default=default_backend)
    namespace = models.CharField(max_length=63, validators=[namespace_validator])
    mlflow_experiment_name = models.CharField(max_length=250)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    mlflow_state = models.CharField(max_length=16, choices=ExperimentState.choices, default=ExperimentState.PENDING)
    mlflow_error = models.CharField(max_length=500, blank=True)
    mlflow_attempts = models.PositiveIntegerField(default=0)
    mlflow_state_since = models.DateTimeField(
        null=True, blank=True, help_text="When mlflow_state last changed (e.g. when the experiment was found deleted)."
    )
    mlflow_attach_existing = models.BooleanField(
        default=False,
        help_text="A platform admin allowed linking an experiment that already exists in MLflow.",
    )
    kueue_queue = models.CharField(
        max_length=63, blank=True, help_text="Kueue LocalQueue for this project's jobs (empty: no Kueue)."
    )
    # The environment its launches run in unless their template pins one; set to the
    # platform default when the project is created. Null: the platform default at launch.
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="projects"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["Project"].as_manager()
    access_scope = TeamScope("team")

    class Meta:
        ordering = ["team__slug", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["team", "slug"], name="project_slug_unique_in_team"),
            # One MLflow experiment belongs to at most one project (by id; names change).
            models.UniqueConstraint(
                fields=["mlflow_experiment_id"],
                condition=~models.Q(mlflow_experiment_id=""),
                name="project_experiment_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.slug}"

    @property
    def full_slug(self) -> str:
        return f"{self.team.slug}/{self.slug}"

    @staticmethod
    def default_namespace(team_slug: str, slug: str) -> str:
        return f"plinth-{team_slug}-{slug}"

    @property
    def experiment_owner_tags(self) -> dict[str, str]:
        """The tags Plinth sets on the MLflow experiment it creates for this project; an
        experiment carrying them is recognised as this project's own."""
        return {EXPERIMENT_TEAM_TAG: self.team.slug, EXPERIMENT_PROJECT_TAG: self.slug}

    @staticmethod
    def default_experiment(team_slug: str, slug: str) -> str:
        return f"{team_slug}/{slug}"

    def as_audit(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "name": self.name,
            "gpu_quota": self.gpu_quota,
            "backend": self.backend,
            "namespace": self.namespace,
            "mlflow_experiment_name": self.mlflow_experiment_name,
            "mlflow_attach_existing": self.mlflow_attach_existing,
        }

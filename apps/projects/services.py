"""Every change to projects: create, update, link to MLflow. Quotas are checked against
the team's GPU budget under a row lock on the team."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.access import policies
from apps.accounts.models import Team, User, slug_validator
from apps.audit.services import record
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.projects.models import Backend, ExperimentState, Project, namespace_validator


def _validated(validator: Any, field: str, value: str) -> str:
    try:
        validator(value)
    except ValidationError as exc:
        raise InvalidInput.field(field, exc.messages[0]) from None
    return value


def _check_quota_fits(team: Team, quota: int, *, excluding: Project | None = None) -> None:
    if quota < 0:
        raise InvalidInput.field("gpu_quota", "The GPU quota cannot be negative.")
    others = team.projects.all()
    if excluding is not None:
        others = others.exclude(pk=excluding.pk)
    allocated = sum(others.values_list("gpu_quota", flat=True))
    if allocated + quota > team.gpu_budget:
        raise Conflict(
            f"Team {team.slug} has a GPU budget of {team.gpu_budget}; its other projects hold {allocated}, "
            f"so this project can have at most {max(team.gpu_budget - allocated, 0)}."
        )


def _schedule_access_sync(project: Project) -> None:
    """Namespace, role bindings, quota (cluster) and permissions (MLflow), after commit,
    wherever a sync is configured (apps.console.scheduling decides)."""
    from apps.console.scheduling import schedule_project_sync

    schedule_project_sync(project)


def _schedule_experiment_link(project: Project) -> None:
    from apps.projects.tasks import ensure_project_experiment

    enqueue_on_commit(ensure_project_experiment, project.pk)


@transaction.atomic
def create_project(
    actor: User,
    team: Team,
    *,
    slug: str,
    name: str,
    description: str = "",
    gpu_quota: int = 0,
    backend: str = Backend.LOCAL,
    namespace: str = "",
    mlflow_experiment: str = "",
) -> Project:
    """Create a project in `team` (its leads, platform admins). The MLflow experiment is
    created (or attached when it exists) by a task after commit, so creating a project
    succeeds while MLflow is down."""
    team = Team.objects.select_for_update().get(pk=team.pk)
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins create projects.")
    _validated(slug_validator, "slug", slug)
    if not name.strip():
        raise InvalidInput.field("name", "A project needs a name.")
    if backend not in Backend.values:
        raise InvalidInput.field("backend", f"Unknown backend {backend!r}; choose local or kubernetes.")
    namespace = namespace or Project.default_namespace(team.slug, slug)
    _validated(namespace_validator, "namespace", namespace)
    if len(namespace) > 63:
        raise InvalidInput.field("namespace", "The default namespace is too long; choose one of at most 63 characters.")
    if Project.objects.filter(team=team, slug=slug).exists():
        raise InvalidInput.field("slug", f"Team {team.slug} already has a project called {slug!r}.")
    if Project.objects.filter(namespace=namespace).exists():
        raise InvalidInput.field("namespace", f"The namespace {namespace!r} is already used by another project.")
    mlflow_experiment = (mlflow_experiment or Project.default_experiment(team.slug, slug)).strip()
    if Project.objects.filter(mlflow_experiment_name=mlflow_experiment).exists():
        raise InvalidInput.field(
            "mlflow_experiment", f"The experiment {mlflow_experiment!r} belongs to another project."
        )
    _check_quota_fits(team, gpu_quota)
    project = Project.objects.create(
        team=team,
        slug=slug,
        name=name.strip(),
        description=description,
        gpu_quota=gpu_quota,
        backend=backend,
        namespace=namespace,
        mlflow_experiment_name=mlflow_experiment,
    )
    record(actor, "project.created", project, team=team, project=project, after=project.as_audit())
    _schedule_experiment_link(project)
    _schedule_access_sync(project)
    return project


@transaction.atomic
def update_project(
    actor: User,
    project: Project,
    *,
    name: str | None = None,
    description: str | None = None,
    gpu_quota: int | None = None,
    backend: str | None = None,
) -> Project:
    """Change a project's name, description, GPU quota (within the team budget) or backend."""
    team = Team.objects.select_for_update().get(pk=project.team_id)
    project = Project.objects.select_for_update().get(pk=project.pk)
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins change a project.")
    before = project.as_audit()
    if name is not None:
        if not name.strip():
            raise InvalidInput.field("name", "A project needs a name.")
        project.name = name.strip()
    if description is not None:
        project.description = description
    if backend is not None:
        if backend not in Backend.values:
            raise InvalidInput.field("backend", f"Unknown backend {backend!r}; choose local or kubernetes.")
        project.backend = backend
    if gpu_quota is not None and gpu_quota != project.gpu_quota:
        _check_quota_fits(team, gpu_quota, excluding=project)
        project.gpu_quota = gpu_quota
    after = project.as_audit()
    if after != before:
        project.save()
        record(actor, "project.updated", project, team=team, project=project, before=before, after=after)
        if (before["gpu_quota"], before["backend"]) != (after["gpu_quota"], after["backend"]):
            _schedule_access_sync(project)
    return project


def link_experiment(project_pk: int) -> Project | None:
    """Create or attach the project's MLflow experiment. Raises MlflowUnavailable when
    MLflow is down (the caller retries); records a refusal (e.g. a deleted experiment) on
    the row. Idempotent: a linked project is left alone."""
    from apps.tracking.gateway import MlflowError, gateway

    project = Project.objects.select_related("team").filter(pk=project_pk).first()
    if project is None or project.mlflow_state == ExperimentState.LINKED:
        return project
    Project.objects.filter(pk=project.pk).update(mlflow_attempts=project.mlflow_attempts + 1)
    try:
        experiment_id = gateway().ensure_experiment(
            project.mlflow_experiment_name, tags={"plinth.team": project.team.slug, "plinth.project": project.slug}
        )
    except MlflowError as exc:
        with transaction.atomic():
            Project.objects.filter(pk=project.pk).update(mlflow_state=ExperimentState.FAILED, mlflow_error=exc.message)
            project.refresh_from_db()
            record(
                None,
                "project.experiment_failed",
                project,
                team=project.team,
                project=project,
                after={"error": exc.message},
            )
        return project
    with transaction.atomic():
        updated = (
            Project.objects.filter(pk=project.pk)
            .exclude(mlflow_state=ExperimentState.LINKED)
            .update(mlflow_experiment_id=experiment_id, mlflow_state=ExperimentState.LINKED, mlflow_error="")
        )
        project.refresh_from_db()
        if updated:
            record(
                None,
                "project.experiment_linked",
                project,
                team=project.team,
                project=project,
                after={"mlflow_experiment_id": experiment_id, "name": project.mlflow_experiment_name},
            )
            _schedule_access_sync(project)  # MLflow permissions need the experiment's id
    return project

"""Every change to projects: create, update, link to MLflow. Quotas are checked against
the team's GPU budget under a row lock on the team."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from apps.access import policies
from apps.access.roles import Action
from apps.accounts.models import Team, User, slug_validator
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.environments.models import Environment
from apps.projects.models import (
    EXPERIMENT_PROJECT_TAG,
    EXPERIMENT_TEAM_TAG,
    Backend,
    ExperimentState,
    Project,
    default_backend,
    namespace_validator,
)


def _is_number(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def usable_environment(actor: User, team: Team | None, value: Any, *, field: str = "environment") -> Environment:
    """The environment `value` names (an Environment, its id, or its label `name:version` /
    `team/name:version`) when `actor` may use it in `team`: a platform-wide one, or one of
    `team`'s own that `actor` can see (`team` None: platform-wide ones only). Anything else,
    an unknown one included, is InvalidInput (400) on `field` (an environment one may not
    see reads as one that does not exist). The life-cycle rules are the caller's
    (`selection.apply_rules`, `is_selectable`)."""
    from apps.environments.selection import recorded_by_label

    found: Environment | None = None
    if isinstance(value, Environment):
        found = value
    elif (isinstance(value, int) and not isinstance(value, bool)) or _is_number(value):
        pk = int(value)
        # Past a bigint, PostgreSQL would refuse the query itself (a 500): no such row.
        found = Environment.objects.filter(pk=pk).first() if 0 < pk < 2**63 else None
    elif isinstance(value, str):
        found = recorded_by_label(value)
    usable = (
        found is not None
        and (found.team_id is None or (team is not None and found.team_id == team.pk))
        and Environment.objects.for_user(actor, Action.VIEW).filter(pk=found.pk).exists()
    )
    if not usable or found is None:
        raise InvalidInput.field(field, f"No environment {value!s:.80} that this project can use.")
    return Environment.objects.select_related("build", "team", "replaced_by").get(pk=found.pk)


def environment_choices(actor: Any, team: Team) -> list[Environment]:
    """The environments `actor` may pick for `team`'s projects and launches: platform-wide
    ones and `team`'s own, ready or deprecated, by name then newest version first."""
    from apps.environments.models import SELECTABLE_STATES

    rows = Environment.objects.for_user(actor, Action.VIEW).filter(state__in=SELECTABLE_STATES)
    rows = rows.filter(Q(team__isnull=True) | Q(team=team)).select_related("team")
    return list(rows.order_by("team_id", "name", "-version"))


def _environment_label(environment_id: int | None) -> str:
    if environment_id is None:
        return ""
    found = Environment.objects.select_related("team").filter(pk=environment_id).first()
    return found.label if found is not None else ""


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


def experiment_refusal(
    experiment: dict[str, Any],
    *,
    team_slug: str,
    slug: str,
    attach_existing: bool,
    project_pk: int | None = None,
) -> tuple[str, str] | None:
    """Why the MLflow experiment `experiment` (MLflow's dict: experiment_id, name, tags,
    lifecycle_stage) may not be linked to the project `team_slug/slug`, as (state, sentence),
    or None when it may.

    The rule (the hardening issue on cross-team experiments): a project reaches MLflow only
    through its experiment's id, and one id belongs to at most one project; an experiment
    Plinth created for this very project (it carries the project's `plinth.team` and
    `plinth.project` tags) is linked; any other existing experiment is linked only when a
    platform admin allowed it (`attach_existing`); a deleted one never."""
    experiment_id = str(experiment.get("experiment_id", ""))
    name = str(experiment.get("name", ""))
    holders = Project.objects.filter(mlflow_experiment_id=experiment_id)
    if project_pk is not None:
        holders = holders.exclude(pk=project_pk)
    if experiment_id and holders.exists():
        return (
            ExperimentState.REFUSED,
            f"The MLflow experiment {name!r} (id {experiment_id}) belongs to another Plinth project; "
            "one experiment belongs to at most one project. Pick another name.",
        )
    tags = {t.get("key"): t.get("value") for t in experiment.get("tags", []) or []}
    ours = tags.get(EXPERIMENT_TEAM_TAG) == team_slug and tags.get(EXPERIMENT_PROJECT_TAG) == slug
    if not ours and not attach_existing:
        return (
            ExperimentState.REFUSED,
            f"An MLflow experiment called {name!r} already exists and Plinth did not create it for this "
            "project: pick another name, or ask a platform admin to attach that experiment.",
        )
    if experiment.get("lifecycle_stage") == "deleted":
        return ExperimentState.FAILED, f"The MLflow experiment {name!r} exists but is deleted; restore it in MLflow."
    return None


def _check_experiment_name(team: Team, slug: str, name: str, *, attach_existing: bool) -> None:
    """At creation, while MLflow answers: refuse at once (409) a name that belongs to an
    experiment this project may not have. MLflow down: the link task checks later."""
    from apps.tracking.gateway import MlflowError, MlflowUnavailable, gateway

    try:
        existing = gateway().get_experiment_by_name(name)
    except (MlflowUnavailable, MlflowError):
        return
    if existing is None:
        if attach_existing:
            raise InvalidInput.field(
                "mlflow_experiment", f"MLflow has no experiment called {name!r} to attach; leave attach unset."
            )
        return
    refusal = experiment_refusal(existing, team_slug=team.slug, slug=slug, attach_existing=attach_existing)
    if refusal is not None:
        raise Conflict(refusal[1], fields={"mlflow_experiment": [refusal[1]]})


def create_project(
    actor: User,
    team: Team,
    *,
    slug: str,
    name: str,
    description: str = "",
    gpu_quota: int = 0,
    backend: str | None = None,
    namespace: str = "",
    mlflow_experiment: str = "",
    attach_existing: bool = False,
) -> Project:
    """Create a project in `team` (its leads, platform admins). `backend` defaults to
    `PLINTH_DEFAULT_BACKEND`. The MLflow experiment is created by a task after commit, so
    creating a project succeeds while MLflow is down.

    `mlflow_experiment` names a NEW experiment (default `<team>/<project>`). A name taken in
    MLflow by an experiment Plinth did not create for this project is a 409 (checked now when
    MLflow answers, and again when the task links it: the project is then `refused`).
    `attach_existing` (platform admins only, else 403) links the existing experiment of that
    name instead; the decision is part of the audited `project.created` event. Raises
    InvalidInput (400), NotAllowed (403), Conflict (409: budget, experiment)."""
    if attach_existing and not policies.can_attach_experiment(actor):
        raise NotAllowed("Only platform admins attach an MLflow experiment that already exists; a lead gets a new one.")
    experiment = (mlflow_experiment or Project.default_experiment(team.slug, slug)).strip()
    if policies.can_manage_team(actor, team) and slug and not Project.objects.filter(team=team, slug=slug).exists():
        _check_experiment_name(team, slug, experiment, attach_existing=attach_existing)
    return _create_project(
        actor,
        team,
        slug=slug,
        name=name,
        description=description,
        gpu_quota=gpu_quota,
        backend=default_backend() if backend is None or backend == "" else backend,
        namespace=namespace,
        mlflow_experiment=experiment,
        attach_existing=attach_existing,
    )


@transaction.atomic
def _create_project(
    actor: User,
    team: Team,
    *,
    slug: str,
    name: str,
    description: str,
    gpu_quota: int,
    backend: str,
    namespace: str,
    mlflow_experiment: str,
    attach_existing: bool,
) -> Project:
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
    if not mlflow_experiment:
        raise InvalidInput.field("mlflow_experiment", "Name the MLflow experiment, or leave it for the default.")
    if Project.objects.filter(mlflow_experiment_name=mlflow_experiment).exists():
        message = f"The experiment {mlflow_experiment!r} belongs to another project; pick another name."
        raise Conflict(message, fields={"mlflow_experiment": [message]})
    _check_quota_fits(team, gpu_quota)
    from apps.environments.selection import platform_default

    environment = platform_default()  # the default at creation; later changes of it don't move it
    project = Project.objects.create(
        team=team,
        slug=slug,
        name=name.strip(),
        description=description,
        gpu_quota=gpu_quota,
        backend=backend,
        namespace=namespace,
        mlflow_experiment_name=mlflow_experiment,
        mlflow_attach_existing=attach_existing,
        environment=environment,
    )
    after = {**project.as_audit(), "environment": environment.label if environment is not None else ""}
    record(actor, AuditVerb.PROJECT_CREATED, project, team=team, project=project, after=after)
    _schedule_experiment_link(project)
    _schedule_access_sync(project)
    return project


@transaction.atomic(durable=True)
def update_project(
    actor: User,
    project: Project,
    *,
    name: str | None = None,
    description: str | None = None,
    gpu_quota: int | None = None,
    backend: str | None = None,
    environment: Any = None,
) -> Project:
    """Change a project's name, description, GPU quota (within the team budget), backend or
    default environment (`environment`: an Environment, its id or label; a platform-wide
    one or the team's own, ready or deprecated — anything else is InvalidInput, 400, on
    `environment`). Audited as `project.updated` with the changed fields before and after."""
    team = Team.objects.select_for_update().get(pk=project.team_id)
    project = Project.objects.select_for_update().get(pk=project.pk)
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins change a project.")
    before = {**project.as_audit(), "environment": _environment_label(project.environment_id)}
    if environment is not None:
        chosen = usable_environment(actor, team, environment)
        if chosen.pk != project.environment_id and not chosen.is_selectable:
            raise InvalidInput.field(
                "environment", f"The environment {chosen.label} is {chosen.state}; pick a ready one."
            )
        project.environment = chosen
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
    after = {**project.as_audit(), "environment": _environment_label(project.environment_id)}
    if after != before:
        project.save()
        record(actor, AuditVerb.PROJECT_UPDATED, project, team=team, project=project, before=before, after=after)
        if (before["gpu_quota"], before["backend"]) != (after["gpu_quota"], after["backend"]):
            _schedule_access_sync(project)
    return project


def _mark_unlinked(project: Project, state: str, message: str) -> Project:
    """Record that the link failed (`failed`) or was refused (`refused`), with the reason,
    and audit it; the project keeps no experiment id."""
    with transaction.atomic():
        Project.objects.filter(pk=project.pk).exclude(mlflow_state=ExperimentState.LINKED).update(
            mlflow_state=state, mlflow_error=message[:500]
        )
        project.refresh_from_db()
        verb = (
            AuditVerb.PROJECT_EXPERIMENT_REFUSED
            if state == ExperimentState.REFUSED
            else AuditVerb.PROJECT_EXPERIMENT_FAILED
        )
        record(None, verb, project, team=project.team, project=project, after={"error": message[:500]})
    return project


def link_experiment(project_pk: int) -> Project | None:
    """Create the project's MLflow experiment (or, when a platform admin allowed it at
    creation, attach the existing one of that name) and store its id. Raises
    MlflowUnavailable when MLflow is down (the caller retries). An existing experiment the
    project may not have (see `experiment_refusal`) is never attached: the project becomes
    `refused` with the reason; MLflow refusing is `failed`. Idempotent: a linked project is
    left alone, and an experiment this task created before a crash is recognised by its tags."""
    from apps.tracking.gateway import MlflowError, gateway

    project = Project.objects.select_related("team").filter(pk=project_pk).first()
    if project is None or project.mlflow_state == ExperimentState.LINKED:
        return project
    Project.objects.filter(pk=project.pk).update(mlflow_attempts=project.mlflow_attempts + 1)
    client = gateway()
    name = project.mlflow_experiment_name
    tags = {**project.experiment_owner_tags, "plinth.project_id": str(project.pk)}
    try:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            try:
                experiment_id = client.create_experiment(name, tags)
            except MlflowError as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                existing = client.get_experiment_by_name(name)  # created meanwhile by someone else
                if existing is None:
                    raise
        if existing is not None:
            refusal = experiment_refusal(
                existing,
                team_slug=project.team.slug,
                slug=project.slug,
                attach_existing=project.mlflow_attach_existing,
                project_pk=project.pk,
            )
            if refusal is not None:
                return _mark_unlinked(project, *refusal)
            experiment_id = str(existing["experiment_id"])
    except MlflowError as exc:
        return _mark_unlinked(project, ExperimentState.FAILED, exc.message)
    try:
        with transaction.atomic():
            updated = (
                Project.objects.filter(pk=project.pk)
                .exclude(mlflow_state=ExperimentState.LINKED)
                .update(mlflow_experiment_id=experiment_id, mlflow_state=ExperimentState.LINKED, mlflow_error="")
            )
    except IntegrityError:  # another project took this id between the check and now
        return _mark_unlinked(
            project,
            ExperimentState.REFUSED,
            f"The MLflow experiment {name!r} (id {experiment_id}) belongs to another Plinth project; "
            "one experiment belongs to at most one project. Pick another name.",
        )
    with transaction.atomic():
        project.refresh_from_db()
        if updated:
            record(
                None,
                AuditVerb.PROJECT_EXPERIMENT_LINKED,
                project,
                team=project.team,
                project=project,
                after={
                    "mlflow_experiment_id": experiment_id,
                    "name": project.mlflow_experiment_name,
                    "attached_existing": existing is not None,
                },
            )
            _schedule_access_sync(project)  # MLflow permissions need the experiment's id
    return project


RENAME_PAGES = 10  # experiments/search pages read per pass (1,000 experiments a page)


def refresh_experiment_names() -> int:
    """Follow what happened to linked experiments in MLflow, by id (names are for display;
    the id is the link): a renamed experiment's new name becomes the project's display name
    (audited as `project.experiment_renamed`); a deleted one (lifecycle_stage `deleted`, or
    gone from a complete listing: permanently deleted) makes the project `deleted` with the
    reason and time (`project.experiment_deleted`); a restored one makes it `linked` again
    (`project.experiment_restored`). Reads experiments/search page by page (at most
    RENAME_PAGES). Returns how many projects changed; MlflowUnavailable propagates (the
    caller tries again later)."""
    from apps.tracking.gateway import gateway

    watched = {
        experiment_id: (name, state)
        for experiment_id, name, state in Project.objects.filter(
            mlflow_state__in=[ExperimentState.LINKED, ExperimentState.DELETED]
        )
        .exclude(mlflow_experiment_id="")
        .values_list("mlflow_experiment_id", "mlflow_experiment_name", "mlflow_state")
    }
    if not watched:
        return 0
    current: dict[str, dict[str, Any]] = {}
    token = ""
    for _ in range(RENAME_PAGES):
        page, token = gateway().search_experiments(token)
        for experiment in page:
            current[str(experiment.get("experiment_id"))] = experiment
        if not token:
            break
    complete = not token
    changed = 0
    for experiment_id, (name, state) in watched.items():
        found = current.get(experiment_id)
        if found is None:
            if complete and state == ExperimentState.LINKED:
                mark_experiment_deleted(experiment_id, "it no longer exists in MLflow (permanently deleted)")
                changed += 1
            continue
        stage = found.get("lifecycle_stage")
        if stage == "deleted" and state == ExperimentState.LINKED:
            changed += bool(mark_experiment_deleted(experiment_id, "it was deleted in MLflow"))
        elif stage == "active" and state == ExperimentState.DELETED:
            changed += bool(_mark_experiment_restored(None, experiment_id, "it was restored in MLflow"))
        new = str(found.get("name", ""))
        if not new or new == name or len(new) > 250:
            continue
        with transaction.atomic():
            project = Project.objects.select_for_update().select_related("team").get(mlflow_experiment_id=experiment_id)
            before = project.mlflow_experiment_name
            Project.objects.filter(pk=project.pk).update(mlflow_experiment_name=new)
            record(
                None,
                AuditVerb.PROJECT_EXPERIMENT_RENAMED,
                project,
                team=project.team,
                project=project,
                before={"name": before},
                after={"name": new, "mlflow_experiment_id": experiment_id},
            )
        changed += 1
    return changed


def experiment_deleted_sentence(project: Project) -> str:
    """The one sentence every page and the 409 of a launch or sweep give for a project whose
    MLflow experiment was deleted: what happened and the three ways out."""
    experiment_id = project.mlflow_experiment_id
    return (
        f"The MLflow experiment {project.mlflow_experiment_name!r} (id {experiment_id}) of project "
        f"{project.full_slug} was deleted in MLflow, so nothing can be launched or logged in it. Restore it "
        f'(the Restore button on the project page, or MlflowClient().restore_experiment("{experiment_id}")), '
        "ask a platform admin to attach another experiment, or ask a lead to create a new one."
    )


def is_deleted_experiment_error(exc: Exception) -> bool:
    """Whether MLflow refused because the experiment is not active (its 400
    INVALID_PARAMETER_VALUE "... must be in the 'active' state. Current state is deleted.")."""
    return "'active' state" in str(getattr(exc, "message", exc)) and "deleted" in str(getattr(exc, "message", exc))


def _move_experiment_state(
    actor: User | None, experiment_id: str, source: str, target: str, verb: AuditVerb, reason: str, error: str
) -> Project | None:
    """The project of MLflow experiment `experiment_id` in state `source` moves to `target`
    (with `error` and the time) under a row lock, audited as `verb` with `reason`. None when
    no project in `source` holds that id (someone else moved it first)."""
    from django.utils import timezone

    with transaction.atomic():
        project = (
            Project.objects.select_for_update()
            .select_related("team")
            .filter(mlflow_experiment_id=experiment_id, mlflow_state=source)
            .first()
        )
        if project is None:
            return None
        project.mlflow_state = target
        project.mlflow_error = error[:500]
        project.mlflow_state_since = timezone.now()
        project.save(update_fields=["mlflow_state", "mlflow_error", "mlflow_state_since"])
        record(
            actor,
            verb,
            project,
            team=project.team,
            project=project,
            before={"mlflow_state": source},
            after={"mlflow_state": target, "reason": reason, "mlflow_experiment_id": experiment_id},
        )
    return project


def mark_experiment_deleted(experiment_id: str, reason: str) -> Project | None:
    """The linked project of MLflow experiment `experiment_id` becomes `deleted`, with
    `reason` (why Plinth thinks so) and the time; audited as `project.experiment_deleted`.
    Returns the project, or None when no linked project holds that id (already marked)."""
    return _move_experiment_state(
        None,
        experiment_id,
        ExperimentState.LINKED,
        ExperimentState.DELETED,
        AuditVerb.PROJECT_EXPERIMENT_DELETED,
        reason,
        f"The experiment is deleted: {reason}.",
    )


def _mark_experiment_restored(actor: User | None, experiment_id: str, reason: str) -> Project | None:
    return _move_experiment_state(
        actor,
        experiment_id,
        ExperimentState.DELETED,
        ExperimentState.LINKED,
        AuditVerb.PROJECT_EXPERIMENT_RESTORED,
        reason,
        "",
    )


def restore_project_experiment(actor: User, project: Project) -> Project:
    """Restore the project's deleted MLflow experiment (MLflow's `restore_experiment`) and
    link it again: members, leads and platform admins (viewers: 403). 409 when the project's
    experiment is not deleted (nothing to restore) or MLflow cannot restore it (permanently
    deleted: re-link or create a new one); 503 while MLflow is down. Audited as
    `project.experiment_restored` with the actor."""
    from apps.tracking.gateway import MlflowError, gateway

    if not policies.can(actor, Action.LAUNCH, project.team):
        raise NotAllowed("Only the project's members, leads and platform admins restore its experiment.")
    project = Project.objects.select_related("team").get(pk=project.pk)
    if not project.mlflow_experiment_id or project.mlflow_state not in (
        ExperimentState.DELETED,
        ExperimentState.LINKED,
    ):
        raise Conflict(f"{project.full_slug} has no MLflow experiment to restore.")
    client = gateway()
    found = client.get_experiment(project.mlflow_experiment_id)
    if found is None:
        raise Conflict(
            f"MLflow no longer has experiment {project.mlflow_experiment_id} (permanently deleted): "
            "ask a platform admin to attach another experiment, or a lead to create a new one."
        )
    if found.get("lifecycle_stage") == "deleted":
        # Seen deleted before the reconciler noticed: record that first, so the audit trail
        # reads deleted -> restored.
        mark_experiment_deleted(project.mlflow_experiment_id, "it was deleted in MLflow")
        try:
            client.restore_experiment(project.mlflow_experiment_id)
        except MlflowError as exc:
            raise Conflict(f"MLflow did not restore experiment {project.mlflow_experiment_id}: {exc.message}") from None
    elif project.mlflow_state == ExperimentState.LINKED:
        raise Conflict(f"The MLflow experiment of {project.full_slug} is not deleted; there is nothing to restore.")
    restored = _mark_experiment_restored(actor, project.mlflow_experiment_id, f"restored by {actor.username}")
    project.refresh_from_db()
    if restored is None and project.mlflow_state != ExperimentState.LINKED:
        raise Conflict(f"{project.full_slug} changed meanwhile; reload the page.")
    return project


def replace_project_experiment(actor: User, project: Project, name: str = "") -> Project:
    """Give a project whose experiment was deleted in MLflow a NEW experiment (named `name`,
    default `<team>/<project>-<n>`, as a deleted experiment keeps its name in MLflow), tagged
    as the project's own, and link it: leads and platform admins (others: 403). The deleted
    experiment's runs stay in it. 400 for a bad name; 409 when the project's experiment is
    not deleted, or MLflow already has an experiment of that name; 503 while MLflow is down.
    Audited as `project.experiment_replaced` (before: the old id, after: the new one)."""
    from django.utils import timezone

    from apps.tracking.gateway import MlflowError, gateway

    if not policies.can_manage_team(actor, project.team):
        raise NotAllowed("Only the team's leads and platform admins give a project a new experiment.")
    project = Project.objects.select_related("team").get(pk=project.pk)
    if project.mlflow_state != ExperimentState.DELETED:
        raise Conflict(f"The MLflow experiment of {project.full_slug} is not deleted; it keeps its experiment.")
    client = gateway()
    wanted = (name or "").strip()
    if not wanted:
        base = Project.default_experiment(project.team.slug, project.slug)
        for n in range(2, 100):
            if client.get_experiment_by_name(f"{base}-{n}") is None:
                wanted = f"{base}-{n}"
                break
        else:
            raise Conflict("Name the new experiment: every default name is taken in MLflow.")
    if len(wanted) > 250:
        raise InvalidInput.field("name", "An MLflow experiment name is at most 250 characters.")
    if client.get_experiment_by_name(wanted) is not None:
        message = f"MLflow already has an experiment called {wanted!r}; pick another name."
        raise Conflict(message, fields={"name": [message]})
    tags = {**project.experiment_owner_tags, "plinth.project_id": str(project.pk)}
    try:
        experiment_id = client.create_experiment(wanted, tags)
    except MlflowError as exc:
        raise Conflict(f"MLflow did not create {wanted!r}: {exc.message}", fields={"name": [exc.message]}) from None
    with transaction.atomic():
        locked = Project.objects.select_for_update().select_related("team").get(pk=project.pk)
        if locked.mlflow_state != ExperimentState.DELETED:
            raise Conflict(f"{project.full_slug} changed meanwhile; reload the page.")
        before = {"mlflow_experiment_id": locked.mlflow_experiment_id, "name": locked.mlflow_experiment_name}
        locked.mlflow_experiment_id = experiment_id
        locked.mlflow_experiment_name = wanted
        locked.mlflow_state = ExperimentState.LINKED
        locked.mlflow_error = ""
        locked.mlflow_state_since = timezone.now()
        locked.save(
            update_fields=[
                "mlflow_experiment_id",
                "mlflow_experiment_name",
                "mlflow_state",
                "mlflow_error",
                "mlflow_state_since",
            ]
        )
        record(
            actor,
            AuditVerb.PROJECT_EXPERIMENT_REPLACED,
            locked,
            team=locked.team,
            project=locked,
            before=before,
            after={"mlflow_experiment_id": experiment_id, "name": wanted},
        )
        _schedule_access_sync(locked)
    return locked


def attach_experiment(actor: User, project: Project, experiment: str) -> Project:
    """Platform admins only (403 otherwise): link `project` to an experiment that already
    exists in MLflow, named by id or by name, e.g. one created outside Plinth, after its
    owners agreed. 400 when MLflow has no such experiment; 409 when it is deleted, another
    project holds it, or the project is already linked to a different one; 503 while MLflow
    is down. Audited as `project.experiment_attached`; repeating it is a no-op."""
    from apps.tracking.gateway import gateway

    if not policies.can_attach_experiment(actor):
        raise NotAllowed("Only platform admins attach an existing MLflow experiment to a project.")
    wanted = (experiment or "").strip()
    if not wanted:
        raise InvalidInput.field("experiment", "Name the MLflow experiment by id or by name.")
    if len(wanted) > 250:
        raise InvalidInput.field("experiment", "An MLflow experiment name is at most 250 characters.")
    if project.mlflow_state == ExperimentState.LINKED and project.mlflow_experiment_id:
        if wanted in (project.mlflow_experiment_id, project.mlflow_experiment_name):
            return project
        raise Conflict(
            f"{project.full_slug} is already linked to MLflow experiment {project.mlflow_experiment_id}; "
            "its runs live there, so it cannot be moved to another experiment."
        )
    client = gateway()
    found = client.get_experiment(wanted) if wanted.isdigit() else None
    if found is None:
        found = client.get_experiment_by_name(wanted)
    if found is None:
        raise InvalidInput.field("experiment", f"MLflow has no experiment {wanted!r} (by id or name).")
    experiment_id, name = str(found["experiment_id"]), str(found.get("name", ""))
    if found.get("lifecycle_stage") == "deleted":
        raise Conflict(f"The MLflow experiment {name!r} is deleted; restore it in MLflow first.")
    try:
        with transaction.atomic():
            project = Project.objects.select_for_update().select_related("team").get(pk=project.pk)
            if project.mlflow_state == ExperimentState.LINKED and project.mlflow_experiment_id == experiment_id:
                return project
            if project.mlflow_state == ExperimentState.LINKED and project.mlflow_experiment_id:
                raise Conflict(
                    f"{project.full_slug} is already linked to MLflow experiment {project.mlflow_experiment_id}; "
                    "its runs live there, so it cannot be moved to another experiment."
                )
            holder = Project.objects.filter(mlflow_experiment_id=experiment_id).exclude(pk=project.pk).first()
            if holder is not None:
                raise Conflict(
                    f"The MLflow experiment {name!r} (id {experiment_id}) belongs to {holder.full_slug}; "
                    "one experiment belongs to at most one project."
                )
            before = {**project.as_audit(), "mlflow_experiment_id": project.mlflow_experiment_id}
            project.mlflow_experiment_id = experiment_id
            project.mlflow_experiment_name = name or project.mlflow_experiment_name
            project.mlflow_state = ExperimentState.LINKED
            project.mlflow_error = ""
            project.mlflow_attach_existing = True
            project.save(
                update_fields=[
                    "mlflow_experiment_id",
                    "mlflow_experiment_name",
                    "mlflow_state",
                    "mlflow_error",
                    "mlflow_attach_existing",
                ]
            )
            after = {**project.as_audit(), "mlflow_experiment_id": experiment_id}
            record(
                actor,
                AuditVerb.PROJECT_EXPERIMENT_ATTACHED,
                project,
                team=project.team,
                project=project,
                before=before,
                after=after,
            )
            _schedule_access_sync(project)
    except IntegrityError:
        raise Conflict(
            f"The MLflow experiment {name!r} (id {experiment_id}) belongs to another project; "
            "one experiment belongs to at most one project."
        ) from None
    return project

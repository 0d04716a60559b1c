"""Every change to launches: create (access + quota under a row lock, MLflow run first),
cancel, applying what the backends observe, and creating and changing templates."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from apps.access import policies
from apps.access.roles import Action
from apps.accounts.models import Team, User, slug_validator
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.compute.base import Observation
from apps.compute.registry import check_enabled, get_backend
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.environments import selection
from apps.environments.models import Environment
from apps.launches.models import LIVE, TERMINAL, Launch, ParamType, Status, Sweep, SweepStatus, Template
from apps.launches.validation import check_value, clean_parameters, clean_resources, quantity, with_gpu_product
from apps.projects.models import Backend, ExperimentState, Project
from apps.tracking.gateway import MlflowError, gateway

logger = logging.getLogger(__name__)

MLFLOW_END_STATUS: dict[str, str] = {
    Status.SUCCEEDED: "FINISHED",
    Status.FAILED: "FAILED",
    Status.CANCELLED: "KILLED",
    Status.PRUNED: "KILLED",
}
PRUNED_TAG = "plinth.pruned"  # on a pruned trial's MLflow run: why the pruner stopped it
ENVIRONMENT_TAG = "plinth.environment"  # the label (name:version) of the environment it ran in
PACKAGES_TAG = "plinth.environment.packages"  # what that environment adds (see environment_tags)
MAX_PACKAGES_TAG = 5000  # MLflow keeps tag values up to 8,000 characters; stay well under


def environment_tags(environment: Environment) -> dict[str, str]:
    """The MLflow tags naming the environment a run ran in: `plinth.environment` (its label)
    and `plinth.environment.packages`: its own requirements list (one per line) for one
    with a local build, `image=<ref>` for an image-only one, `portal` for the portal's own
    interpreter; cut to 5,000 characters (ending in "…") when longer."""
    if environment.is_portal:
        packages = "portal"
    elif environment.build_id is not None or environment.requirements.strip():
        packages = environment.requirements.strip()
    elif environment.image:
        packages = f"image={environment.image}"
    else:
        packages = ""
    if len(packages) > MAX_PACKAGES_TAG:
        packages = packages[: MAX_PACKAGES_TAG - 1] + "…"
    return {ENVIRONMENT_TAG: environment.label, PACKAGES_TAG: packages}


def launch_environment(
    actor: User, project: Project, template: Template, requested: Environment | int | str | None = None
) -> selection.Selected:
    """The environment a new launch of `template` in `project` runs in, with the warnings to
    show (`selection.for_launch`: asked for, else the template's pin, else the project's
    default, else the platform default; deprecated warns or redirects). `requested`: an
    Environment, id or label the actor may use in the project's team (else InvalidInput,
    400, on `environment`). Raises Conflict (409: building, retired — naming the
    replacement — or none at all) and InvalidInput (400: failed)."""
    from apps.projects.services import usable_environment

    chosen = usable_environment(actor, project.team, requested) if requested not in (None, "") else None
    return selection.for_launch(project, template, chosen)


class ExperimentDeleted(Conflict):
    """The project's MLflow experiment was deleted in MLflow: nothing is launched until it is
    restored, re-linked or replaced (the sentence: projects.services.experiment_deleted_sentence)."""


def _experiment_id(project: Project) -> str:
    """The project's MLflow experiment id, linking it now if the task has not yet.
    ExperimentDeleted (409) when the experiment is known to be deleted in MLflow."""
    from apps.projects.services import experiment_deleted_sentence

    if project.mlflow_state == ExperimentState.DELETED:
        raise ExperimentDeleted(experiment_deleted_sentence(project))
    if project.mlflow_state == ExperimentState.LINKED and project.mlflow_experiment_id:
        return project.mlflow_experiment_id
    from apps.projects.services import link_experiment

    linked = link_experiment(project.pk)  # raises MlflowUnavailable (503) when MLflow is down
    if linked is None or linked.mlflow_state != ExperimentState.LINKED:
        raise Conflict(f"The project's MLflow experiment could not be created: {linked.mlflow_error if linked else ''}")
    return linked.mlflow_experiment_id


def create_experiment_run(project: Project, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create an MLflow run in the project's experiment. MLflow refusing because the
    experiment is deleted (its 400 "must be in the 'active' state") becomes ExperimentDeleted
    (409) with the sentence that says how to fix it; no run exists then. The caller marks the
    project (`mark_deleted_after_refusal`) once its own transaction has rolled back."""
    from apps.projects.services import experiment_deleted_sentence, is_deleted_experiment_error

    try:
        return gateway().create_run(experiment_id, run_name, tags=tags)
    except MlflowError as exc:
        if is_deleted_experiment_error(exc):
            raise ExperimentDeleted(experiment_deleted_sentence(project)) from None
        raise


def mark_deleted_after_refusal(experiment_id: str) -> None:
    """Record what MLflow just said: the project of `experiment_id` is `deleted` (audited)."""
    from apps.projects.services import mark_experiment_deleted

    mark_experiment_deleted(experiment_id, "MLflow refused a new run in it (not in the 'active' state)")


class QuotaExceeded(Conflict):
    """The project's GPU quota is full right now (it frees up as launches end)."""


class TrialTaken(Conflict):
    """A sweep's trial was not started because it needs no starting: another pass of
    `sweeps.advance` started the same trial first, or the sweep ended meanwhile."""


def check_local_gpus(project: Project, gpus: int) -> None:
    """The local backend hands out the GPUs NVML reports on its host, and no more; and
    nothing at all when it is disabled (BackendDisabled, 409: see `compute.registry`)."""
    check_enabled(project.backend)
    if project.backend != "local" or not gpus:
        return
    available = len(get_backend("local").inventory())
    if gpus > available:
        raise Conflict(
            f"{gpus} GPUs requested, but the local backend's host has {available} (as NVML reports). "
            "Use a Kubernetes project for GPU work, or request 0 GPUs."
        )


def gpus_in_use(project: Project) -> int:
    """GPUs the project's live launches hold: each launch its own `gpus`, except the trials
    of a sweep that runs as one Indexed Job, which hold the sweep's reservation instead
    (gpus per trial * min(parallelism, live trials): apps.launches.workloads)."""
    from apps.launches.workloads import in_workload, reserved_gpus

    own = Launch.objects.filter(project=project, status__in=LIVE).exclude(in_workload())
    return int(own.aggregate(n=Sum("gpus"))["n"] or 0) + reserved_gpus(project)


def check_template_allowed(template: Template, project: Project) -> None:
    if not template.is_active:
        raise InvalidInput.field("template", f"The template {template.slug!r} is retired.")
    if template.team_id is not None and template.team_id != project.team_id:
        raise InvalidInput.field("template", f"The template {template} belongs to another team.")
    if project.backend not in template.backends:
        raise InvalidInput.field(
            "template", f"{template.slug} runs on {', '.join(template.backends)}, not on {project.backend}."
        )


def _check_quota(project: Project, gpus: int) -> None:
    used = gpus_in_use(project)
    if used + gpus > project.gpu_quota:
        raise QuotaExceeded(
            f"Project {project.full_slug} has a GPU quota of {project.gpu_quota}; its live launches "
            f"hold {used}, so {gpus} more would exceed it."
        )


def create_launch(
    actor: User,
    project: Project,
    template: Template,
    *,
    parameters: Any = None,
    resources: Any = None,
    name: str = "",
    sweep: Sweep | None = None,
    trial: int | None = None,
    environment: Environment | int | str | None = None,
) -> Launch:
    """Launch `template` in `project` for `actor` (members and up).

    `environment` (optional: an Environment, id or label the actor may use in the project's
    team) overrides the template's pinned one and the project's default; the resolved one
    (`launch_environment`: 400 on `environment`, 409 building/retired) is decided before
    anything is created, recorded on the launch and tagged on its MLflow run
    (`environment_tags`); its warnings (deprecated) are on the returned launch's
    `environment_warnings`, list[str].

    Order matters: input is validated first (400, nothing created); the GPU quota is checked
    (409 with the numbers); the project's experiment is linked if it is not yet and the
    MLflow run is created before any compute (503 if MLflow is down, nothing created) — both
    outside any row lock, so a slow MLflow never holds the project; then, under a lock on the
    project row, the quota is checked again (a launch that committed meanwhile counts), and
    the launch row and its audit event commit together; the submit task is queued after
    commit. A run created for a launch that is then refused is deleted.

    A sweep's trial (`sweep`, `trial`: its index in `sweep.planned`) also locks the sweep row
    (before the project's) for that short write: TrialTaken (409) when the sweep has ended
    or the same trial was started meanwhile (the (sweep, trial) unique constraint).

    `durable`: never called inside another transaction, so nothing holds a lock (nor, on
    SQLite, the write lock) while MLflow answers."""
    if not policies.can(actor, Action.LAUNCH, project.team):
        raise NotAllowed("Viewers cannot launch; ask a lead of the team for the member role.")
    check_template_allowed(template, project)
    clean_params = clean_parameters(template, parameters)
    clean_res = clean_resources(template, resources)
    # One name on every page and in MLflow: the run is named like the launch.
    name = (name or "").strip()[:120] or template.slug
    selected = launch_environment(actor, project, template, environment)  # refusals create nothing
    check_local_gpus(project, clean_res["gpus"])
    _check_quota(project, clean_res["gpus"])  # before MLflow: a full quota creates no run
    client = gateway()
    experiment_id = _experiment_id(project)  # links it (own transaction) when not yet linked
    try:
        run_id = create_experiment_run(
            project,
            experiment_id,
            name,
            tags={
                "plinth.project": project.full_slug,
                "plinth.template": template.slug,
                "mlflow.user": actor.username,
                "plinth.sweep": str(sweep.pk) if sweep else "",
                **environment_tags(selected.environment),
            },
        )
    except ExperimentDeleted:
        mark_deleted_after_refusal(experiment_id)
        raise
    try:
        if sweep is not None and sweep.mlflow_parent_run_id:
            client.set_tag(run_id, "mlflow.parentRunId", sweep.mlflow_parent_run_id)
        try:
            with transaction.atomic(durable=True):
                # The sweep's lock first, the project's second (cancel_sweep takes the sweep's too).
                if sweep is not None:
                    running = Sweep.objects.select_for_update().filter(pk=sweep.pk, status=SweepStatus.RUNNING)
                    if not running.values_list("pk", flat=True):
                        raise TrialTaken(f"Sweep {sweep.pk} has ended; its trial {(trial or 0) + 1} is not started.")
                locked = Project.objects.select_for_update().select_related("team").get(pk=project.pk)
                _check_quota(locked, clean_res["gpus"])
                launch = Launch.objects.create(
                    project=locked,
                    template=template,
                    created_by=actor,
                    sweep=sweep,
                    trial=trial,
                    name=name,
                    parameters=clean_params,
                    resources=clean_res,
                    gpus=clean_res["gpus"],
                    backend=locked.backend,
                    mlflow_run_id=run_id,
                    mlflow_experiment_id=experiment_id,
                    max_runtime_seconds=template.max_runtime_seconds,
                    environment=selected.environment,
                )
                record(
                    actor,
                    AuditVerb.LAUNCH_CREATED,
                    launch,
                    team=locked.team,
                    project=locked,
                    after={
                        "template": template.slug,
                        "parameters": clean_params,
                        "resources": clean_res,
                        "environment": selected.environment.label,
                        **({"environment_warnings": selected.warnings} if selected.warnings else {}),
                    },
                )
                from apps.launches.tasks import submit_launch

                enqueue_on_commit(submit_launch, launch.pk)
        except IntegrityError:
            # Checked after the rollback: on PostgreSQL the failed transaction answers nothing.
            if sweep is None or trial is None or not Launch.objects.filter(sweep=sweep, trial=trial).exists():
                raise
            raise TrialTaken(f"Trial {trial + 1} of sweep {sweep.pk} was started meanwhile.") from None
        launch.environment_warnings = list(selected.warnings)
    except Exception:
        # The run exists but the launch does not: don't leave an orphan behind.
        try:
            client.delete_run(run_id)
        except Exception:
            # Often the request's MLflow time budget is what ran out: a task retries it.
            logger.warning("could not delete orphan MLflow run %s now; queued", run_id)
            from apps.launches.tasks import delete_orphan_run

            with contextlib.suppress(Exception):  # the broker down too: the run stays, logged above
                delete_orphan_run.delay(run_id)
        raise
    return launch


def cancel_launch(actor: User, launch: Launch, *, reason: str = "") -> Launch:
    """Cancel a launch (its creator, leads of the team, platform admins). A queued launch
    ends at once; a submitted one goes `cancelling` until the backend confirms. `reason`
    replaces "cancel requested by <user>" (a sweep cancelling its trials says why)."""
    with transaction.atomic():
        launch = Launch.objects.select_for_update(of=("self",)).select_related("project__team").get(pk=launch.pk)
        if not policies.can_manage_run(actor, launch):
            raise NotAllowed("Only the person who launched it or a lead of the team can cancel it.")
        if launch.is_terminal:
            raise Conflict(f"{launch.job_name} already ended ({launch.status}).")
        if launch.status == Status.CANCELLING:
            return launch
        before = launch.status
        if launch.status == Status.QUEUED:
            launch.status, launch.finished_at = Status.CANCELLED, timezone.now()
            launch.status_reason = "cancelled before submission"
        else:
            launch.status = Status.CANCELLING
            launch.status_reason = reason or f"cancel requested by {actor.username}"
        launch.save(update_fields=["status", "status_reason", "finished_at", "updated_at"])
        record(
            actor,
            AuditVerb.LAUNCH_CANCELLED,
            launch,
            team=launch.project.team,
            project=launch.project,
            before={"status": before},
            after={"status": launch.status},
        )
        from apps.launches.tasks import cancel_on_backend, close_mlflow_run

        if launch.status == Status.CANCELLING:
            enqueue_on_commit(cancel_on_backend, launch.pk)
        else:
            enqueue_on_commit(close_mlflow_run, launch.pk)
    return launch


def prune_launch(launch: Launch, reason: str) -> bool:
    """Stop a running sweep trial because the sweep's pruner says so: the normal cancel
    path (`cancelling`, the backend kills it, its GPUs count as free once it is gone), but
    it ends `pruned` with `reason` as its status reason, and its MLflow run ends KILLED
    tagged `plinth.pruned` = `reason` (see `apply_observation`, `close_mlflow_run`).
    Returns whether this call pruned it (False: it is no longer running). Audited
    (sweep.trial_pruned, by the system)."""
    with transaction.atomic():
        launch = Launch.objects.select_for_update(of=("self",)).select_related("project__team").get(pk=launch.pk)
        if launch.status != Status.RUNNING or launch.sweep_id is None:
            return False
        launch.status, launch.status_reason, launch.prune_reason = Status.CANCELLING, f"pruning: {reason}", reason
        launch.save(update_fields=["status", "status_reason", "prune_reason", "updated_at"])
        record(
            None,
            AuditVerb.TRIAL_PRUNED,
            launch,
            team=launch.project.team,
            project=launch.project,
            before={"status": Status.RUNNING},
            after={"status": Status.CANCELLING, "reason": reason},
        )
        from apps.launches.tasks import cancel_on_backend

        enqueue_on_commit(cancel_on_backend, launch.pk)
    return True


def transition(launch: Launch, status: str, **fields: Any) -> bool:
    """Move `launch` from its current status to `status` with a conditional UPDATE, so two
    workers (or a worker and a person cancelling) never overwrite each other. Returns
    whether this call made the change."""
    if not launch.can_transition_to(status):
        return False
    now = timezone.now()
    if status == Status.RUNNING and not fields.get("started_at"):
        fields["started_at"] = launch.started_at or now
    if status in TERMINAL:
        fields.setdefault("finished_at", now)
        fields["finished_at"] = fields["finished_at"] or now
    changed = Launch.objects.filter(pk=launch.pk, status=launch.status).update(status=status, updated_at=now, **fields)
    if changed:
        for key, value in fields.items():
            setattr(launch, key, value)
        launch.status = status
    return bool(changed)


def apply_observation(launch: Launch, seen: Observation) -> bool:
    """Fold what the backend saw into the row. Returns whether the launch just ended."""
    status = launch.status
    if seen.state == "missing":
        if status == Status.CANCELLING and launch.prune_reason:
            return transition(launch, Status.PRUNED, status_reason=launch.prune_reason)
        if status == Status.CANCELLING:
            return transition(launch, Status.CANCELLED, status_reason=launch.status_reason or "cancelled")
        if status in (Status.PENDING, Status.RUNNING):
            return transition(launch, Status.FAILED, status_reason="the job disappeared from the backend")
        return False
    if seen.state == "pending":
        if status in (Status.SUBMITTING, Status.PENDING) and seen.reason != launch.status_reason:
            if status == Status.SUBMITTING:
                transition(launch, Status.PENDING, status_reason=seen.reason)
            else:
                Launch.objects.filter(pk=launch.pk, status=status).update(status_reason=seen.reason)
                launch.status_reason = seen.reason
        return False
    if seen.state == "running":
        if status in (Status.SUBMITTING, Status.PENDING):
            transition(launch, Status.RUNNING, status_reason=seen.reason, started_at=seen.started_at)
        return False
    if seen.state in ("succeeded", "failed", "cancelled"):
        target = {"succeeded": Status.SUCCEEDED, "failed": Status.FAILED, "cancelled": Status.CANCELLED}[seen.state]
        if status == Status.CANCELLING and target == Status.FAILED:
            target = Status.CANCELLED  # killed because we asked
        reason = seen.reason
        if target == Status.CANCELLED and launch.prune_reason:
            target, reason = Status.PRUNED, launch.prune_reason
        return transition(
            launch,
            target,
            status_reason=reason,
            exit_code=seen.exit_code,
            started_at=launch.started_at or seen.started_at,
            finished_at=seen.finished_at,
        )
    return False


def close_mlflow_run(launch: Launch) -> None:
    """End the launch's MLflow run with the status matching the launch (idempotent)."""
    if launch.mlflow_closed or not launch.mlflow_run_id or launch.status not in TERMINAL:
        return
    try:
        if launch.status == Status.PRUNED:
            gateway().set_tag(launch.mlflow_run_id, PRUNED_TAG, launch.prune_reason or launch.status_reason)
        gateway().end_run(launch.mlflow_run_id, MLFLOW_END_STATUS[launch.status])
    except MlflowError as exc:
        # MLflow understood and refused (the run was deleted, or is no longer active):
        # there is nothing left to close, and retrying would block the reconciler forever.
        logger.info("MLflow run %s of %s not closed: %s", launch.mlflow_run_id, launch.job_name, exc.message)
    Launch.objects.filter(pk=launch.pk).update(mlflow_closed=True)
    launch.mlflow_closed = True


# --- templates: platform admins manage global ones, leads their team's -------------------

TEMPLATE_FIELDS = (
    "name",
    "description",
    "image",
    "command",
    "parameters",
    "default_resources",
    "max_resources",
    "max_runtime_seconds",
    "backends",
    "is_active",
    "objective",
)


def _check_template_spec(data: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    command = data.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        errors["command"] = ['The command is a non-empty list of arguments, e.g. ["python", "train.py"].']
    if not str(data.get("image", "")).strip():
        errors["image"] = ["Name the container image the job runs in."]
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        errors["parameters"] = ["Parameters are an object of name: {type, default, min, max, choices}."]
        parameters = {}
    for name, spec in parameters.items():
        key = f"parameters.{name}"
        if not name.isidentifier():
            errors[key] = ["A parameter name is letters, digits and underscores."]
            continue
        if not isinstance(spec, dict) or spec.get("type") not in ParamType.values:
            errors[key] = [f"Give a type: one of {', '.join(ParamType.values)}."]
            continue
        if spec["type"] == ParamType.CHOICE and not (isinstance(spec.get("choices"), list) and spec["choices"]):
            errors[key] = ["A choice parameter needs a non-empty list of choices."]
            continue
        if "default" in spec:
            try:
                check_value(spec, spec["default"])
            except ValueError as exc:
                errors[key] = [f"The default {exc}."]
    for key in ("default_resources", "max_resources"):
        res = data.get(key, {})
        if not isinstance(res, dict):
            errors[key] = ["Resources are an object with cpu, memory, gpus, gpu_product."]
            continue
        if key in data:  # stored under `gpu_product`: the deprecated `gpu_model` is renamed
            res = data[key] = with_gpu_product(res, key, errors)
        for q in ("cpu", "memory"):
            if q in res:
                try:
                    quantity(str(res[q]))
                except ValueError:
                    errors[f"{key}.{q}"] = [f"{res[q]!r} is not a quantity like 2, 500m or 4Gi."]
        if "gpus" in res and (isinstance(res["gpus"], bool) or not isinstance(res["gpus"], int) or res["gpus"] < 0):
            errors[f"{key}.gpus"] = ["A whole number, 0 or more."]
    backends = data.get("backends", [])
    if not isinstance(backends, list) or not backends or any(b not in Backend.values for b in backends):
        errors["backends"] = [f"Choose from: {', '.join(Backend.values)}."]
    runtime = data.get("max_runtime_seconds", 3600)
    if isinstance(runtime, bool) or not isinstance(runtime, int) or not 1 <= runtime <= 7 * 24 * 3600:
        errors["max_runtime_seconds"] = ["Between 1 second and 7 days."]
    objective = data.get("objective") or {}
    if objective and not (
        isinstance(objective, dict)
        and set(objective) == {"metric", "direction"}
        and isinstance(objective["metric"], str)
        and 0 < len(objective["metric"].strip()) <= 120
        and isinstance(objective["direction"], str)
        and objective["direction"] in OBJECTIVE_DIRECTIONS
    ):
        errors["objective"] = [
            'Empty, or {"metric": a metric logged at every step, "direction": "minimize" or "maximize"}.'
        ]
    elif "objective" in data:
        # Stored as the sweep's own spelling (min/max); the API's minimize/maximize is accepted.
        data["objective"] = (
            {"metric": objective["metric"].strip(), "direction": OBJECTIVE_DIRECTIONS[objective["direction"]]}
            if objective
            else {}
        )
    return errors


# A template's objective direction as given (the sweep API's spelling, or Sweep.direction's)
# → as stored (Sweep.direction's).
OBJECTIVE_DIRECTIONS = {"minimize": "min", "maximize": "max", "min": "min", "max": "max"}


def _template_environment(actor: User, team: Team | None, value: Any, current_id: int | None) -> Environment | None:
    """The environment a template pins (`value`: an Environment, id or label; None or ""
    for none): platform-wide, or the template's team's own; a newly chosen one must be
    ready or deprecated. InvalidInput (400) on `environment` otherwise."""
    if value in (None, ""):
        return None
    from apps.projects.services import usable_environment

    chosen = usable_environment(actor, team, value)
    if chosen.pk != current_id and not chosen.is_selectable:
        raise InvalidInput.field("environment", f"The environment {chosen.label} is {chosen.state}; pick a ready one.")
    return chosen


@transaction.atomic
def create_template(actor: User, team: Team | None, *, slug: str, environment: Any = None, **data: Any) -> Template:
    """A new template for `team` (its leads) or global (`team` None: platform admins).
    `environment` (an Environment, id or label; optional) pins the environment its launches
    run in: platform-wide or `team`'s own, ready or deprecated (else 400 on `environment`)."""
    if not policies.can_manage_templates(actor, team):
        raise NotAllowed("Leads manage their team's templates; platform admins manage global ones.")
    pinned = _template_environment(actor, team, environment, None)
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise InvalidInput.field("slug", exc.messages[0]) from None
    data = {key: data[key] for key in TEMPLATE_FIELDS if key in data}
    data.setdefault("backends", [Backend.LOCAL, Backend.KUBERNETES])
    data.setdefault("name", slug)
    errors = _check_template_spec(data)
    if Template.objects.filter(team=team, slug=slug).exists():
        errors["slug"] = [f"A template called {slug!r} already exists here."]
    if errors:
        raise InvalidInput("The template is not valid.", fields=errors)
    template = Template.objects.create(team=team, slug=slug, environment=pinned, **data)
    after = {"slug": slug, **data, "environment": pinned.label if pinned is not None else ""}
    record(actor, AuditVerb.TEMPLATE_CREATED, template, team=team, after=after)
    return template


@transaction.atomic(durable=True)
def update_template(actor: User, template: Template, **changes: Any) -> Template:
    """Change a template (its team's leads; platform admins for global ones). `environment`
    in `changes`: the environment to pin (Environment, id or label; None or "" unpins), as
    for `create_template`. Audited with the changed fields before and after."""
    template = (
        Template.objects.select_for_update(of=("self",)).select_related("team", "environment__team").get(pk=template.pk)
    )
    if not policies.can_manage_templates(actor, template.team):
        raise NotAllowed("Leads manage their team's templates; platform admins manage global ones.")
    old_env = template.environment.label if template.environment is not None else ""
    before = {key: getattr(template, key) for key in TEMPLATE_FIELDS}
    after = {**before, **{key: changes[key] for key in TEMPLATE_FIELDS if key in changes}}
    errors = _check_template_spec(after)
    if errors:
        raise InvalidInput("The template is not valid.", fields=errors)
    if "environment" in changes:
        template.environment = _template_environment(
            actor, template.team, changes["environment"], template.environment_id
        )
    new_env = template.environment.label if template.environment is not None else ""
    before["environment"], after["environment"] = old_env, new_env
    for key, value in after.items():
        if key != "environment":
            setattr(template, key, value)
    template.save()
    record(
        actor,
        AuditVerb.TEMPLATE_UPDATED,
        template,
        team=template.team,
        before={k: v for k, v in before.items() if after[k] != v},
        after={k: v for k, v in after.items() if before[k] != v},
    )
    return template

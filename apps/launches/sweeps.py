"""Sweeps: grid and random search over a template's parameters.

Every trial's parameters are planned when the sweep is created (so the page can show
"k of N" and nothing depends on a random state later). Trials start `parallelism` at a
time; each trial that ends triggers `advance` (from the reconciler), which starts the
next ones — no task sleeps waiting for a slot."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.access import policies
from apps.access.roles import Action
from apps.accounts.models import User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed, ServiceError, Unavailable
from apps.core.queue import enqueue_on_commit
from apps.launches.models import LIVE, Launch, ParamType, Status, Sweep, SweepStatus, SweepStrategy, Template
from apps.launches.services import (
    ExperimentDeleted,
    QuotaExceeded,
    TrialTaken,
    _experiment_id,
    cancel_launch,
    check_local_gpus,
    check_template_allowed,
    create_experiment_run,
    create_launch,
    mark_deleted_after_refusal,
)
from apps.launches.validation import check_value, clean_parameters, clean_resources
from apps.projects.models import Project
from apps.tracking.gateway import gateway

MAX_TRIALS = 1000


def _space_errors(template: Template, space: Any, strategy: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    errors: dict[str, list[str]] = {}
    if not isinstance(space, dict) or not space:
        return {}, {"space": ["The search space must name at least one parameter."]}
    clean: dict[str, Any] = {}
    for name, values in space.items():
        key = f"space.{name}"
        spec = template.parameters.get(name)
        if spec is None:
            errors[key] = [f"{template.slug} has no parameter {name!r}."]
            continue
        if isinstance(values, list):
            if not values:
                errors[key] = ["Give at least one value."]
                continue
            try:
                clean[name] = [check_value(spec, v) for v in values]
            except ValueError as exc:
                errors[key] = [f"{name} {exc}."]
        elif isinstance(values, dict) and strategy == SweepStrategy.RANDOM:
            if spec.get("type") not in (ParamType.INT, ParamType.FLOAT):
                errors[key] = ["A range needs an int or float parameter."]
                continue
            try:
                low, high = check_value(spec, values["min"]), check_value(spec, values["max"])
            except (KeyError, ValueError) as exc:
                errors[key] = [f"A range needs min and max within the parameter's bounds ({exc})."]
                continue
            log = bool(values.get("log", False))
            if low >= high or (log and low <= 0):
                errors[key] = ["min must be below max (and above 0 on a log scale)."]
                continue
            clean[name] = {"min": low, "max": high, "log": log, "int": spec.get("type") == ParamType.INT}
        elif isinstance(values, dict):
            errors[key] = [
                f"{name}: a range ({{min, max, log}}) needs the Random strategy; "
                f"choose Random, or give {name} a list of values for Grid."
            ]
        else:
            more = " or a range {min, max, log}" if strategy == SweepStrategy.RANDOM else ""
            errors[key] = [f"{name}: give a list of values{more}."]
    return clean, errors


SEED_PARAMETER = "seed"  # a template parameter of this name is each trial's random seed
DRAWS_PER_TRIAL = 50  # random draws tried per wanted trial before a mixed space counts as exhausted


def _unique(values: list[Any]) -> list[Any]:
    """`values` without repeats, first occurrence kept (so `[20, 20, 21]` is two values)."""
    seen: list[Any] = []
    for value in values:
        if not any(value == kept and type(value) is type(kept) for kept in seen):
            seen.append(value)
    return seen


def space_size(space: dict[str, Any]) -> int | None:
    """How many distinct trials the space holds: the product of its lists' distinct values,
    or None when a range makes it unbounded (a mixed or continuous space)."""
    size = 1
    for values in space.values():
        if not isinstance(values, list):
            return None
        size *= len(_unique(values))
    return size


def _draw(rng: random.Random, space: dict[str, Any]) -> dict[str, Any]:
    trial: dict[str, Any] = {}
    for name, values in space.items():
        if isinstance(values, list):
            trial[name] = rng.choice(values)
            continue
        low, high = values["min"], values["max"]
        # On a log scale, as many trials land in [1e-4, 1e-3] as in [0.1, 1].
        log = values["log"]
        value = math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)
        trial[name] = min(max(round(value), low), high) if values["int"] else value
    return trial


def _nth_combination(space: dict[str, list[Any]], index: int) -> dict[str, Any]:
    """The `index`-th trial of the grid over `space` (lists only), in itertools.product order."""
    trial: dict[str, Any] = {}
    for name in reversed(list(space)):
        index, position = divmod(index, len(space[name]))
        trial[name] = space[name][position]
    return {name: trial[name] for name in space}


def plan_trials(strategy: str, space: dict[str, Any], max_trials: int, seed: int) -> list[dict[str, Any]]:
    """Every trial's parameter values, in order, never the same values twice.

    Grid: the product of the lists' distinct values, in order, cut at `max_trials`.
    Random over lists only (a finite space): `max_trials` combinations sampled without
    replacement (the whole space, shuffled, when it holds fewer). Random with a range
    (`{min, max, log}`, unbounded): independent draws, an exact repeat drawn again; after
    DRAWS_PER_TRIAL times `max_trials` draws the plan stops short (an int range can be small).
    Reproducible: the same arguments give the same plan."""
    if strategy == SweepStrategy.GRID:
        names = list(space)
        combos = itertools.product(*(_unique(space[n]) for n in names))
        return [dict(zip(names, combo, strict=True)) for combo in itertools.islice(combos, max_trials)]
    rng = random.Random(seed)  # noqa: S311 - a reproducible search, not a secret
    size = space_size(space)
    if size is not None:
        lists = {name: _unique(values) for name, values in space.items()}
        return [_nth_combination(lists, i) for i in rng.sample(range(size), min(max_trials, size))]
    trials: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(DRAWS_PER_TRIAL * max_trials):
        if len(trials) >= max_trials:
            break
        trial = _draw(rng, space)
        key = json.dumps(trial, sort_keys=True)
        if key not in seen:
            seen.add(key)
            trials.append(trial)
    return trials


def plan_note(strategy: str, space: dict[str, Any], max_trials: int, planned: int) -> str:
    """What the sweep page and the API say when the plan holds fewer trials than asked
    (empty when it holds `max_trials`): the space has fewer distinct combinations, so
    each runs once."""
    if planned >= max_trials:
        return ""
    size = space_size(space)
    if size is not None:
        return (
            f"max_trials is {max_trials}, but the search space holds only {size} distinct "
            f"combination{'s' if size != 1 else ''}: each runs once ({planned} trials)."
        )
    return (
        f"max_trials is {max_trials}, but only {planned} distinct trials could be drawn from the "
        "search space (its ranges are narrow): each runs once."
    )


def assign_seeds(
    template: Template, planned: list[dict[str, Any]], space: dict[str, Any], pinned: dict[str, Any], seed: int
) -> None:
    """Give every trial its own value of the template's `seed` parameter (in place), drawn
    without replacement within the parameter's bounds from the sweep's seed, so no two
    trials repeat the same random stream. Left alone when the template has no int `seed`
    parameter, when the sweep pins it (in its parameters) or searches over it (in its space)."""
    spec = template.parameters.get(SEED_PARAMETER)
    if not isinstance(spec, dict) or spec.get("type") != ParamType.INT:
        return
    if SEED_PARAMETER in space or SEED_PARAMETER in pinned:
        return
    low = int(spec.get("min", 0))
    high = int(spec.get("max", 2**31 - 1))
    if high < low:
        return
    rng = random.Random(f"seeds:{seed}")  # noqa: S311 - reproducible, not a secret
    count = min(len(planned), high - low + 1)
    for trial, value in zip(planned, rng.sample(range(low, high + 1), count), strict=False):
        trial[SEED_PARAMETER] = value


def create_sweep(
    actor: User,
    project: Project,
    template: Template,
    *,
    strategy: str,
    space: Any,
    max_trials: Any,
    parallelism: Any,
    parameters: Any = None,
    resources: Any = None,
    metric: str = "",
    direction: str = "max",
    name: str = "",
    seed: int | None = None,
) -> Sweep:
    """Plan a sweep and start its first `parallelism` trials (members and up).

    The plan never repeats a trial (see `plan_trials`); when the space holds fewer distinct
    trials than `max_trials`, each runs once and the sweep's `status_reason` says so (see
    `plan_note`). Each trial gets its own seed (see `assign_seeds`). Raises InvalidInput
    (400), NotAllowed (403), Conflict (409: quota, the project's experiment deleted in
    MLflow), MlflowUnavailable (503)."""
    if not policies.can(actor, Action.LAUNCH, project.team):
        raise NotAllowed("Viewers cannot start sweeps.")
    check_template_allowed(template, project)
    errors: dict[str, list[str]] = {}
    if strategy not in SweepStrategy.values:
        errors["strategy"] = ["Choose grid or random."]
    for field, value in (("max_trials", max_trials), ("parallelism", parallelism)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TRIALS:
            errors[field] = [f"A whole number from 1 to {MAX_TRIALS}."]
    if direction not in ("max", "min"):
        errors["direction"] = ["Choose max or min."]
    clean_space, space_errors = _space_errors(template, space, strategy)
    errors.update(space_errors)
    if errors:
        raise InvalidInput("The sweep is not valid.", fields=errors)
    base = clean_parameters(template, parameters)
    clean_res = clean_resources(template, resources)
    check_local_gpus(project, clean_res["gpus"])
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    planned = plan_trials(strategy, clean_space, max_trials, seed)
    note = plan_note(strategy, clean_space, max_trials, len(planned))
    assign_seeds(template, planned, clean_space, parameters if isinstance(parameters, dict) else {}, seed)
    at_once = min(parallelism, len(planned))
    if clean_res["gpus"] * at_once > project.gpu_quota:
        raise Conflict(
            f"{at_once} trials at once with {clean_res['gpus']} GPUs each need {clean_res['gpus'] * at_once} GPUs; "
            f"project {project.full_slug} has a quota of {project.gpu_quota}."
        )
    experiment_id = _experiment_id(project)
    try:
        parent = create_experiment_run(
            project,
            experiment_id,
            name or f"sweep of {template.slug}",
            tags={
                "plinth.project": project.full_slug,
                "plinth.template": template.slug,
                "mlflow.user": actor.username,
                "plinth.sweep.strategy": strategy,
            },
        )
    except ExperimentDeleted:
        mark_deleted_after_refusal(experiment_id)
        raise
    try:
        with transaction.atomic(durable=True):
            sweep = Sweep.objects.create(
                project=project,
                template=template,
                created_by=actor,
                name=name.strip()[:120],
                strategy=strategy,
                space=clean_space,
                base_parameters=base,
                resources=clean_res,
                planned=planned,
                max_trials=len(planned),
                parallelism=parallelism,
                metric=metric.strip()[:120],
                direction=direction,
                seed=seed,
                status_reason=note,
                mlflow_parent_run_id=parent,
            )
            record(
                actor,
                AuditVerb.SWEEP_CREATED,
                sweep,
                team=project.team,
                project=project,
                after={
                    "template": template.slug,
                    "strategy": strategy,
                    "trials": len(planned),
                    "parallelism": parallelism,
                    "note": note,
                },
            )
            from apps.launches.tasks import advance_sweep

            enqueue_on_commit(advance_sweep, sweep.pk)
    except Exception:
        with contextlib.suppress(Exception):  # don't leave the parent run orphaned
            gateway().delete_run(parent)
        raise
    return sweep


def advance(sweep_pk: int) -> int:
    """Start trials until `parallelism` are live or the plan is done; finish the sweep when
    every trial has ended. Returns how many trials this call started. Safe to call any
    time from anywhere, twice at once included.

    Each trial is decided under a short lock on the sweep row and started outside any
    transaction: create_launch talks to MLflow first and takes its locks only for its own
    short write, so no lock (nor SQLite's write lock) is held while MLflow answers, and a
    trial that committed stays committed whatever happens to the next. Two calls that pick
    the same trial race on the (sweep, trial) unique constraint: the loser deletes its
    MLflow run (TrialTaken) and decides again."""
    started = 0
    while (step := _next_trial(sweep_pk)) is not None:
        sweep, index = step
        try:
            create_launch(
                sweep.created_by,
                sweep.project,
                sweep.template,
                parameters={**sweep.base_parameters, **sweep.planned[index]},
                resources=sweep.resources,
                name=f"{sweep.name or 'sweep'} #{sweep.pk} trial {index + 1}",
                sweep=sweep,
                trial=index,
            )
        except TrialTaken:
            continue  # another call started it, or the sweep ended: decide again
        except (QuotaExceeded, Unavailable):
            # The quota is full, or MLflow is down for now: the plan stays; a trial ending
            # (or the reconciler's next pass) calls us again.
            break
        except ServiceError as exc:
            # Permanent (template retired, creator lost the role, no GPUs here): plan no more.
            _stop_planning(sweep_pk, exc)
            break
        started += 1
    return started


def _locked_running(sweep_pk: int) -> Sweep | None:
    """The sweep, its row locked (inside the caller's transaction), if it is still running."""
    sweep = (
        Sweep.objects.select_for_update(of=("self",))  # not the project: create_launch locks it
        .select_related("project__team", "template", "created_by")
        .filter(pk=sweep_pk)
        .first()
    )
    return sweep if sweep is not None and sweep.status == SweepStatus.RUNNING else None


def _next_index(sweep: Sweep, trials: Any) -> int | None:
    """The first planned trial no launch holds yet (None when every one was started)."""
    taken = set(trials.values_list("trial", flat=True))
    return next((i for i in range(len(sweep.planned)) if i not in taken), None)


def _next_trial(sweep_pk: int) -> tuple[Sweep, int] | None:
    """Under the sweep's lock: the trial to start next, if a slot is free; finishes the
    sweep when every planned trial was started and none is live any more."""
    with transaction.atomic(durable=True):
        sweep = _locked_running(sweep_pk)
        if sweep is None:
            return None
        trials = Launch.objects.filter(sweep=sweep)
        index = _next_index(sweep, trials)
        live = trials.filter(status__in=LIVE).count()
        if index is None and live == 0:
            _finish(sweep, trials)
        if index is None or live >= sweep.parallelism:
            return None
        return sweep, index


def _stop_planning(sweep_pk: int, exc: ServiceError) -> None:
    """Cut the plan after the trials already started, saying why; finish the sweep if
    none of them is live."""
    with transaction.atomic(durable=True):
        sweep = _locked_running(sweep_pk)
        if sweep is None:
            return
        trials = Launch.objects.filter(sweep=sweep)
        index = _next_index(sweep, trials)
        if index is not None:
            sweep.planned = sweep.planned[:index]
            stopped = f"stopped after {index} trials: {exc.message}"
            sweep.status_reason = f"{sweep.status_reason} {stopped}".strip()
            sweep.save(update_fields=["planned", "status_reason"])
        if not trials.filter(status__in=LIVE).exists():
            _finish(sweep, trials)


def _finish(sweep: Sweep, trials: Any) -> None:
    succeeded = trials.filter(status=Status.SUCCEEDED).exists()
    sweep.status = SweepStatus.SUCCEEDED if succeeded else SweepStatus.FAILED
    sweep.finished_at = timezone.now()
    sweep.save(update_fields=["status", "finished_at"])
    record(
        None,
        AuditVerb.SWEEP_FINISHED,
        sweep,
        team=sweep.project.team,
        project=sweep.project,
        after={"status": sweep.status},
    )
    from apps.launches.tasks import close_sweep_run

    enqueue_on_commit(close_sweep_run, sweep.pk)


def cancel_sweep(actor: User, sweep: Sweep) -> Sweep:
    """Stop planning new trials and cancel the live ones."""
    with transaction.atomic(durable=True):
        sweep = Sweep.objects.select_for_update().select_related("project__team").get(pk=sweep.pk)
        if sweep.created_by_id != actor.pk and not policies.can_manage_team(actor, sweep.project.team):
            raise NotAllowed("Only the person who started it or a lead of the team can cancel it.")
        if sweep.status != SweepStatus.RUNNING:
            raise Conflict(f"The sweep already ended ({sweep.status}).")
        sweep.status, sweep.finished_at = SweepStatus.CANCELLED, timezone.now()
        sweep.save(update_fields=["status", "finished_at"])
        record(actor, AuditVerb.SWEEP_CANCELLED, sweep, team=sweep.project.team, project=sweep.project)
        for trial in Launch.objects.filter(sweep=sweep, status__in=LIVE).exclude(status=Status.CANCELLING):
            cancel_launch(actor, trial)
        from apps.launches.tasks import close_sweep_run

        enqueue_on_commit(close_sweep_run, sweep.pk)
    return sweep

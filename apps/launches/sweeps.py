"""Sweeps: grid, random and adaptive (bayes, cmaes) search over a template's parameters.

One code path for every strategy: `Sweep.planned` is the list of every trial's parameters,
in order, and `advance` starts the first planned trial no launch holds yet. Grid and
random sweeps plan every trial when the sweep is created (so nothing depends on a random
state later); adaptive ones plan lazily, one trial at a time as a slot frees up, by asking
Optuna with the results so far (apps.launches.optimizer), and append it to the plan before
starting it. Trials start `parallelism` at a time; each trial that ends triggers `advance`
(from the reconciler), which starts the next ones — no task sleeps waiting for a slot."""

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
from apps.launches import optimizer
from apps.launches.models import LIVE, TERMINAL, Launch, ParamType, Status, Sweep, SweepStatus, SweepStrategy, Template
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
    environment_tags,
    launch_environment,
    mark_deleted_after_refusal,
)
from apps.launches.validation import check_value, clean_parameters, clean_resources
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import gateway

MAX_TRIALS = 1000
MAX_METRIC = 120  # characters of the objective's metric name (Sweep.metric)


# Strategies that take ranges ({min, max, log}) as well as lists of values.
RANGE_STRATEGIES = frozenset({SweepStrategy.RANDOM, SweepStrategy.BAYES, SweepStrategy.CMAES})
# The keys a range may give; `int` is what the API answers back (taken from the parameter's
# type), so a sweep's cleaned space can be sent again as it is.
RANGE_KEYS = frozenset({"min", "max", "log", "int"})


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
        elif isinstance(values, dict) and strategy in RANGE_STRATEGIES:
            if spec.get("type") not in (ParamType.INT, ParamType.FLOAT):
                errors[key] = ["A range needs an int or float parameter."]
                continue
            try:
                low, high = check_value(spec, values["min"]), check_value(spec, values["max"])
            except (KeyError, ValueError) as exc:
                errors[key] = [f"A range needs min and max within the parameter's bounds ({exc})."]
                continue
            log = values.get("log", False)
            unknown = sorted(set(values) - RANGE_KEYS)
            if unknown or not isinstance(log, bool):
                errors[key] = [
                    f"A range is {{min, max, log}} with log true or false"
                    f"{'; it takes no ' + ', '.join(map(str, unknown)) if unknown else ''}."
                ]
                continue
            if low >= high or (log and low <= 0):
                errors[key] = ["min must be below max (and above 0 on a log scale)."]
                continue
            clean[name] = {"min": low, "max": high, "log": log, "int": spec.get("type") == ParamType.INT}
        elif isinstance(values, dict):
            errors[key] = [
                f"{name}: a range ({{min, max, log}}) needs the Random, Bayes or CMA-ES strategy; "
                f"choose one of them, or give {name} a list of values for Grid."
            ]
        else:
            more = " or a range {min, max, log}" if strategy in RANGE_STRATEGIES else ""
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


def _seed_bounds(template: Template) -> tuple[int, int]:
    spec = template.parameters.get(SEED_PARAMETER) or {}
    return int(spec.get("min", 0)), int(spec.get("max", 2**31 - 1))


def wants_seeds(template: Template, space: dict[str, Any], pinned: dict[str, Any]) -> bool:
    """Whether each trial gets its own `seed` (see `assign_seeds`): the template has an int
    `seed` parameter with a non-empty range that the sweep neither pins nor searches."""
    spec = template.parameters.get(SEED_PARAMETER)
    if not isinstance(spec, dict) or spec.get("type") != ParamType.INT:
        return False
    if SEED_PARAMETER in space or SEED_PARAMETER in pinned:
        return False
    low, high = _seed_bounds(template)
    return high >= low


def next_seed(template: Template, sweep_seed: int, index: int, used: set[Any]) -> int:
    """The `seed` of trial `index` planned after the sweep was created (adaptive trials, an
    extension): drawn from the sweep's seed and the index (reproducible), avoiding `used`
    while the range has room."""
    low, high = _seed_bounds(template)
    rng = random.Random(f"seeds:{sweep_seed}:{index}")  # noqa: S311 - reproducible, not a secret
    value = rng.randint(low, high)
    for _ in range(100):
        if value not in used:
            break
        value = rng.randint(low, high)
    return value


def assign_seeds(
    template: Template, planned: list[dict[str, Any]], space: dict[str, Any], pinned: dict[str, Any], seed: int
) -> None:
    """Give every trial its own value of the template's `seed` parameter (in place), drawn
    without replacement within the parameter's bounds from the sweep's seed, so no two
    trials repeat the same random stream. Left alone when the template has no int `seed`
    parameter, when the sweep pins it (in its parameters) or searches over it (in its space)."""
    if not wants_seeds(template, space, pinned):
        return
    low, high = _seed_bounds(template)
    rng = random.Random(f"seeds:{seed}")  # noqa: S311 - reproducible, not a secret
    count = min(len(planned), high - low + 1)
    for trial, value in zip(planned, rng.sample(range(low, high + 1), count), strict=False):
        trial[SEED_PARAMETER] = value


EARLY_STOPPING_KEYS = {
    "median": {"type", "min_steps", "min_trials"},
    "asha": {"type", "min_steps", "reduction_factor"},
    "hyperband": {"type", "min_steps", "reduction_factor", "max_steps"},
}
MAX_STEPS = 10_000_000


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def clean_early_stopping(early_stopping: Any, metric: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate `early_stopping` ({} or None: every trial runs to its end).

    Shape: {"type": "median" | "asha" | "hyperband", "min_steps": n (1..10^7, no trial is
    pruned before it logged step n), "min_trials": n (median: completed trials needed before
    any pruning, default 3), "reduction_factor": n (asha/hyperband, 2..10, default 3),
    "max_steps": n (hyperband: the steps a full trial logs, default: estimated)}. Returns the
    cleaned dict and field errors keyed `early_stopping.<key>`."""
    if early_stopping in (None, {}):
        return {}, {}
    if not isinstance(early_stopping, dict):
        return {}, {"early_stopping": ['An object like {"type": "median", "min_steps": 5}.']}
    errors: dict[str, list[str]] = {}
    kind = early_stopping.get("type")
    if not isinstance(kind, str) or kind not in EARLY_STOPPING_KEYS:
        return {}, {"early_stopping.type": [f"Choose {', '.join(EARLY_STOPPING_KEYS)}."]}
    min_steps = early_stopping.get("min_steps")
    unknown = sorted(set(early_stopping) - EARLY_STOPPING_KEYS[kind])
    if unknown:
        errors["early_stopping"] = [f"{kind} early stopping takes no {', '.join(unknown)}."]
    if not _whole(min_steps, 1, MAX_STEPS):
        errors["early_stopping.min_steps"] = [
            f"A whole number of steps from 1 to {MAX_STEPS}: no trial is pruned before it logged that step."
        ]
    if "min_trials" in early_stopping and not _whole(early_stopping["min_trials"], 1, MAX_TRIALS):
        errors["early_stopping.min_trials"] = [f"A whole number from 1 to {MAX_TRIALS}."]
    if "reduction_factor" in early_stopping and not _whole(early_stopping["reduction_factor"], 2, 10):
        errors["early_stopping.reduction_factor"] = ["A whole number from 2 to 10."]
    floor = min_steps if _whole(min_steps, 1, MAX_STEPS) else 0
    if "max_steps" in early_stopping and not (
        _whole(early_stopping["max_steps"], 1, MAX_STEPS) and early_stopping["max_steps"] > floor
    ):
        errors["early_stopping.max_steps"] = ["A whole number of steps above min_steps."]
    if not metric:
        errors["metric"] = ["Early stopping compares trials on a metric: name the one the template logs per step."]
    return ({} if errors else dict(early_stopping)), errors


def _strategy_errors(strategy: str, metric: str, clean_space: dict[str, Any]) -> dict[str, list[str]]:
    """What an adaptive strategy needs beyond a valid space: an objective, and for CMA-ES
    at least one numeric range to search."""
    errors: dict[str, list[str]] = {}
    if strategy in optimizer.ADAPTIVE and not metric:
        errors["metric"] = [f"A {strategy} sweep optimises a metric: name one the template logs."]
    numeric = any(optimizer.is_numeric(d) for d in optimizer.distributions(clean_space).values())
    if strategy == SweepStrategy.CMAES and clean_space and not numeric:
        errors["space"] = [
            "CMA-ES searches numeric ranges: give at least one parameter a range {min, max}, "
            "or choose the Bayes strategy for lists of values."
        ]
    return errors


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
    early_stopping: Any = None,
) -> Sweep:
    """Plan a sweep and start its first `parallelism` trials (members and up).

    Grid/random: the plan never repeats a trial (see `plan_trials`); when the space holds
    fewer distinct trials than `max_trials`, each runs once and the sweep's `status_reason`
    says so (see `plan_note`). Bayes/cmaes: `metric` (+ `direction`) is the objective and
    trials are asked one at a time (see `advance`), never the same parameters twice (`_ask`);
    over lists only, `max_trials` is capped at the space's size with the same note. The
    environment is resolved once here and kept on the sweep (`Sweep.environment`): every
    trial runs in it (`trials_environment`). `early_stopping`: see
    `clean_early_stopping`. Each trial gets its own seed (see `assign_seeds`). Raises
    InvalidInput (400), NotAllowed (403), Conflict (409: quota, the project's experiment
    deleted in MLflow), MlflowUnavailable (503)."""
    if not policies.can(actor, Action.LAUNCH, project.team):
        raise NotAllowed("Viewers cannot start sweeps.")
    check_template_allowed(template, project)
    errors: dict[str, list[str]] = {}
    if strategy not in SweepStrategy.values:
        errors["strategy"] = [f"Choose {', '.join(SweepStrategy.values)}."]
    for field, value in (("max_trials", max_trials), ("parallelism", parallelism)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TRIALS:
            errors[field] = [f"A whole number from 1 to {MAX_TRIALS}."]
    if direction not in ("max", "min"):
        errors["direction"] = ["Choose max or min."]
    metric = (metric or "").strip()
    if len(metric) > MAX_METRIC:
        errors["metric"] = [f"At most {MAX_METRIC} characters."]
    clean_space, space_errors = _space_errors(template, space, strategy)
    errors.update(space_errors)
    errors.update(_strategy_errors(strategy, metric, clean_space))
    stopping, stopping_errors = clean_early_stopping(early_stopping, metric)
    errors.update(stopping_errors)
    if errors:
        raise InvalidInput("The sweep is not valid.", fields=errors)
    base = clean_parameters(template, parameters)
    clean_res = clean_resources(template, resources)
    check_local_gpus(project, clean_res["gpus"])
    # One name on every page and in MLflow: the parent run is named like the sweep.
    name = (name or "").strip()[:120] or f"sweep of {template.slug}"
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    adaptive = strategy in optimizer.ADAPTIVE
    planned = [] if adaptive else plan_trials(strategy, clean_space, max_trials, seed)
    total = len(planned)
    if adaptive:
        # Over lists only, the space holds `space_size` distinct trials: an adaptive sweep
        # asks no more than that (each runs once, as for grid and random).
        size = space_size(clean_space)
        total = max_trials if size is None else min(max_trials, size)
    note = plan_note(strategy, clean_space, max_trials, total)
    assign_seeds(template, planned, clean_space, parameters if isinstance(parameters, dict) else {}, seed)
    seeded = wants_seeds(template, clean_space, parameters if isinstance(parameters, dict) else {})
    at_once = min(parallelism, total)
    if clean_res["gpus"] * at_once > project.gpu_quota:
        raise Conflict(
            f"{at_once} trials at once with {clean_res['gpus']} GPUs each need {clean_res['gpus'] * at_once} GPUs; "
            f"project {project.full_slug} has a quota of {project.gpu_quota}."
        )
    # Refused here (retired, failed, building) before anything exists; its trials run in it.
    selected = launch_environment(actor, project, template)
    experiment_id = _experiment_id(project)
    try:
        parent = create_experiment_run(
            project,
            experiment_id,
            name,
            tags={
                "plinth.project": project.full_slug,
                "plinth.template": template.slug,
                "mlflow.user": actor.username,
                "plinth.sweep.strategy": strategy,
                **environment_tags(selected.environment),
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
                name=name,
                strategy=strategy,
                space=clean_space,
                base_parameters=base,
                resources=clean_res,
                planned=planned,
                max_trials=total,
                parallelism=parallelism,
                metric=metric,
                direction=direction,
                seed=seed,
                early_stopping=stopping,
                seeded=seeded,
                status_reason=note,
                mlflow_parent_run_id=parent,
                environment=selected.environment,
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
                    "trials": total,
                    "parallelism": parallelism,
                    "metric": metric,
                    "direction": direction,
                    "early_stopping": stopping,
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


def trials_environment(sweep: Sweep) -> int | None:
    """The environment (id) the sweep's next trial runs in: the one `create_sweep` resolved
    and kept on the sweep (`Sweep.environment`), so every trial runs in it whatever default
    changes meanwhile (a deprecated-and-redirected one still moves new trials to its
    replacement; a retired one stops the plan). Sweeps created before that field existed:
    the one their first trial ran in; None before it (it resolves as for a launch)."""
    if sweep.environment_id is not None:
        return int(sweep.environment_id)
    return (
        Launch.objects.filter(sweep=sweep, environment__isnull=False)
        .order_by("trial", "pk")
        .values_list("environment_id", flat=True)
        .first()
    )


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
    from apps.launches import workloads

    if workloads.starts_as_workload(sweep_pk):
        # Grid/random on Kubernetes: every trial at once, as one Indexed Job (apps.launches.workloads).
        return workloads.create_trials(sweep_pk)
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
                name=sweep.trial_name(index),
                sweep=sweep,
                trial=index,
                environment=trials_environment(sweep),
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


def _may_ask(sweep: Sweep) -> bool:
    """An adaptive sweep whose plan has not reached `max_trials` yet plans more."""
    return sweep.strategy in optimizer.ADAPTIVE and len(sweep.planned) < sweep.max_trials


def _next_trial(sweep_pk: int) -> tuple[Sweep, int] | None:
    """Under the sweep's lock: the trial to start next, if a slot is free; finishes the
    sweep when every trial was planned and started and none is live any more.

    An adaptive sweep with no planned trial left to start asks Optuna for the next one
    (`_ask`) and commits it to the plan before anything starts it: a worker that dies after
    this commit leaves a planned trial without a launch, which the next pass starts; one
    that dies before it asks again and gets the same parameters (optimizer module)."""
    with transaction.atomic(durable=True):
        sweep = _locked_running(sweep_pk)
        if sweep is None:
            return None
        trials = Launch.objects.filter(sweep=sweep)
        index = _next_index(sweep, trials)
        live = trials.filter(status__in=LIVE).count()
        if index is None and live == 0 and not _may_ask(sweep):
            _finish(sweep, trials)
        if live >= sweep.parallelism:
            return None
        if index is None and _may_ask(sweep):
            if _results_unread(trials):
                # An ended trial's objective is not read yet (MLflow was down when it ended):
                # asking now would treat it as still running, and the study would differ
                # from the one rebuilt later. The reconciler reads it, then asks.
                return None
            try:
                index = _ask(sweep, list(trials))
            except optimizer.NothingNew as exc:
                # Only repeats left to ask: plan no more, finish once the live trials end.
                _cut_plan(sweep, trials, f"{exc}.")
                return None
        if index is None:
            return None
        return sweep, index


def _results_unread(trials: Any) -> bool:
    """Whether an ended trial of these (a Launch queryset of one sweep) has a result
    Optuna should see that nobody read from MLflow yet (`record_objective`)."""
    unread = trials.filter(status__in=TERMINAL, objective_state=optimizer.ObjectiveState.UNREAD)
    return bool(unread.exclude(mlflow_run_id="").exists())


def _ask(sweep: Sweep, trials: list[Launch]) -> int:
    """Append Optuna's next trial to the sweep's plan (inside the caller's transaction,
    the sweep row locked); returns its index. Raises optimizer.NothingNew when the sampler
    proposes only parameters of trials already planned (nothing is appended then)."""
    params, attrs = optimizer.ask(sweep, trials)
    index = len(sweep.planned)
    if sweep.seeded:
        used = {entry.get(SEED_PARAMETER) for entry in sweep.planned}
        params[SEED_PARAMETER] = next_seed(sweep.template, sweep.seed, index, used)
    sweep.planned = [*sweep.planned, params]
    if attrs:
        sweep.trial_attrs = {**(sweep.trial_attrs or {}), str(index): attrs}
    sweep.save(update_fields=["planned", "trial_attrs"])
    return index


def _stop_planning(sweep_pk: int, exc: ServiceError) -> None:
    """Cut the plan after the trials already started, saying why; finish the sweep if
    none of them is live."""
    with transaction.atomic(durable=True):
        sweep = _locked_running(sweep_pk)
        if sweep is None:
            return
        _cut_plan(sweep, Launch.objects.filter(sweep=sweep), exc.message)


def _cut_plan(sweep: Sweep, trials: Any, why: str) -> None:
    """`_stop_planning`'s work inside the caller's transaction (the sweep row locked): drop
    the planned trials no launch holds, an adaptive sweep's `max_trials` becomes the trials
    started, `why` joins the status reason; the sweep finishes if none of its trials is live."""
    index = _next_index(sweep, trials)
    if index is not None or _may_ask(sweep):
        index = len(sweep.planned) if index is None else index
        sweep.planned = sweep.planned[:index]
        if sweep.strategy in optimizer.ADAPTIVE:
            sweep.max_trials = index
        sweep.status_reason = f"{sweep.status_reason} stopped after {index} trials: {why}".strip()
        sweep.save(update_fields=["planned", "max_trials", "status_reason"])
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
    from apps.launches.tasks import close_sweep_run, release_workload

    enqueue_on_commit(close_sweep_run, sweep.pk)
    if sweep.workload:
        enqueue_on_commit(release_workload, sweep.pk)  # its ConfigMap of trial scripts


def cancel_sweep(actor: User, sweep: Sweep) -> Sweep:
    """Stop planning new trials and cancel the live ones."""
    with transaction.atomic(durable=True):
        sweep = Sweep.objects.select_for_update(of=("self",)).select_related("project__team").get(pk=sweep.pk)
        if not policies.can_manage_run(actor, sweep):
            raise NotAllowed("Only the person who started it or a lead of the team can cancel it.")
        if sweep.status != SweepStatus.RUNNING:
            raise Conflict(f"The sweep already ended ({sweep.status}).")
        sweep.status, sweep.finished_at = SweepStatus.CANCELLED, timezone.now()
        sweep.save(update_fields=["status", "finished_at"])
        record(actor, AuditVerb.SWEEP_CANCELLED, sweep, team=sweep.project.team, project=sweep.project)
        if sweep.workload:
            from apps.launches.workloads import cancel_trials

            cancel_trials(actor, sweep)  # its Indexed Job's trials: one deletion of the Job
        for trial in Launch.objects.filter(sweep=sweep, status__in=LIVE).exclude(status=Status.CANCELLING):
            cancel_launch(actor, trial)
        from apps.launches.tasks import close_sweep_run

        enqueue_on_commit(close_sweep_run, sweep.pk)
    return sweep


def fail_sweep(sweep_pk: int, reason: str) -> bool:
    """End a running sweep as failed with `reason` (the sweep cannot work: e.g. its
    objective is never logged), cancelling its live trials on behalf of its creator.
    Returns whether this call ended it (False: it had ended already)."""
    with transaction.atomic(durable=True):
        sweep = _locked_running(sweep_pk)
        if sweep is None:
            return False
        sweep.status, sweep.finished_at = SweepStatus.FAILED, timezone.now()
        sweep.status_reason = f"{sweep.status_reason} {reason}".strip()
        sweep.save(update_fields=["status", "finished_at", "status_reason"])
        record(
            None,
            AuditVerb.SWEEP_FINISHED,
            sweep,
            team=sweep.project.team,
            project=sweep.project,
            after={"status": sweep.status, "reason": reason},
        )
        if sweep.workload:
            from apps.launches.workloads import cancel_trials

            cancel_trials(sweep.created_by, sweep, reason=f"the sweep failed: {reason}")  # one Job deletion
        for trial in Launch.objects.filter(sweep=sweep, status__in=LIVE).exclude(status=Status.CANCELLING):
            cancel_launch(sweep.created_by, trial, reason=f"the sweep failed: {reason}")
        from apps.launches.tasks import close_sweep_run

        enqueue_on_commit(close_sweep_run, sweep.pk)
    return True


def _more_planned(sweep: Sweep, count: int) -> list[dict[str, Any]]:
    """`count` new grid/random trials for an extension: the strategy's plan for the larger
    budget, without the trials already planned (compared on the space's parameters). Fewer
    when the space has no more distinct trials."""

    def key(trial: dict[str, Any]) -> str:
        return optimizer.parameters_key(trial, sweep.space)

    seen = {key(t) for t in sweep.planned}
    fresh: list[dict[str, Any]] = []
    for trial in plan_trials(sweep.strategy, sweep.space, len(sweep.planned) + count, sweep.seed):
        if len(fresh) >= count:
            break
        if key(trial) not in seen:
            seen.add(key(trial))
            fresh.append(trial)
    if sweep.seeded:
        used = {entry.get(SEED_PARAMETER) for entry in sweep.planned}
        for offset, trial in enumerate(fresh):
            trial[SEED_PARAMETER] = next_seed(sweep.template, sweep.seed, len(sweep.planned) + offset, used)
            used.add(trial[SEED_PARAMETER])
    return fresh


def extend_sweep(actor: User, sweep: Sweep, trials: Any) -> Sweep:
    """Run `trials` more trials of an ended (succeeded, failed or cancelled) sweep: it is
    running again, `max_trials` becomes the trials started so far plus `trials` (trials a
    cancelled sweep had planned but never started are dropped), and the same study
    continues — trial numbers carry on after the last one, an adaptive sweep's sampler sees
    every earlier result, the best trial stays the best until beaten. Grid/random sweeps
    plan the new trials now, skipping every trial already planned (fewer when the space
    runs out); an adaptive sweep over lists only asks at most the space's trials not run
    yet. Its MLflow parent run is reopened (RUNNING) once this commits (task
    `reopen_sweep_run`, retried while MLflow is down) and ended again with the sweep.
    Audited (sweep.extended).

    Raises InvalidInput (400: `trials` not a whole number from 1 to MAX_TRIALS, or the
    total over MAX_TRIALS), NotAllowed (403: only its creator or a lead of the team),
    Conflict (409: the sweep is running, trials of it are still being stopped, its space has
    no trial left to run, or the project's MLflow experiment is known to be deleted:
    ExperimentDeleted)."""
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise InvalidInput.field("trials", f"A whole number from 1 to {MAX_TRIALS}.")
    with transaction.atomic(durable=True):
        sweep = (
            Sweep.objects.select_for_update(of=("self",))
            .select_related("project__team", "template", "created_by")
            .get(pk=sweep.pk)
        )
        if not policies.can_manage_run(actor, sweep):
            raise NotAllowed("Only the person who started it or a lead of the team can extend it.")
        if not policies.can(actor, Action.LAUNCH, sweep.project.team):
            raise NotAllowed("Viewers cannot start trials.")
        if sweep.status == SweepStatus.RUNNING:
            raise Conflict("The sweep is still running: extend it once it has ended (or cancel it first).")
        if Launch.objects.filter(sweep=sweep, status__in=LIVE).exists():
            raise Conflict("Trials of the sweep are still being stopped: extend it once they have ended.")
        if sweep.project.mlflow_state == ExperimentState.DELETED:
            from apps.projects.services import experiment_deleted_sentence

            raise ExperimentDeleted(experiment_deleted_sentence(sweep.project))
        if len(sweep.planned) + trials > MAX_TRIALS:
            raise InvalidInput.field(
                "trials", f"The sweep has {len(sweep.planned)} trials; at most {MAX_TRIALS - len(sweep.planned)} more."
            )
        before = {"status": sweep.status, "max_trials": sweep.max_trials}
        # Trials planned but never started (a sweep cancelled early) are dropped: N more
        # trials means N more than ran. A dropped adaptive trial is asked again as it was.
        taken = Launch.objects.filter(sweep=sweep).values_list("trial", flat=True)
        ran = max((t for t in taken if t is not None), default=-1) + 1
        sweep.planned = sweep.planned[:ran]
        sweep.trial_attrs = {k: v for k, v in (sweep.trial_attrs or {}).items() if not k.isdigit() or int(k) < ran}
        if sweep.strategy not in optimizer.ADAPTIVE:
            fresh = _more_planned(sweep, trials)
            if not fresh:
                raise Conflict(
                    f"Every distinct trial of the search space ({len(sweep.planned)}) has run: there is nothing to add."
                )
            sweep.planned = [*sweep.planned, *fresh]
            trials = len(fresh)
        elif (size := space_size(sweep.space)) is not None:
            # Lists only: as many more as the space holds distinct trials not run yet.
            left = size - len({optimizer.parameters_key(t, sweep.space) for t in sweep.planned})
            if left <= 0:
                raise Conflict(f"Every distinct trial of the search space ({size}) has run: there is nothing to add.")
            trials = min(trials, left)
        sweep.max_trials = ran + trials
        sweep.status, sweep.finished_at = SweepStatus.RUNNING, None
        sweep.status_reason = f"{sweep.status_reason} Extended by {trials} trials by {actor.username}.".strip()
        sweep.save(update_fields=["planned", "trial_attrs", "max_trials", "status", "finished_at", "status_reason"])
        record(
            actor,
            AuditVerb.SWEEP_EXTENDED,
            sweep,
            team=sweep.project.team,
            project=sweep.project,
            before=before,
            after={"status": sweep.status, "max_trials": sweep.max_trials, "trials": trials},
        )
        from apps.launches.tasks import advance_sweep, reopen_sweep_run

        if sweep.mlflow_parent_run_id:
            # The parent run was ended with the sweep: running again (MLflow down: retried).
            enqueue_on_commit(reopen_sweep_run, sweep.pk)
        enqueue_on_commit(advance_sweep, sweep.pk)
    return sweep

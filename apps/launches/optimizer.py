"""The sweep's optimiser: an Optuna study rebuilt from Plinth's own rows.

Adaptive sweeps (`bayes`: Optuna's TPESampler, `cmaes`: its CmaEsSampler) decide each
trial from the results of the earlier ones, through Optuna's ask-and-tell interface; early
stopping asks Optuna's pruners (median, ASHA, Hyperband) about running trials.

Why rebuilt rather than stored in Optuna's own storage: Plinth's rows already are the
study. `Sweep.planned` holds every trial's parameters in order (its index is the trial's
number, unique per sweep by a database constraint), each trial's launch holds its status,
its objective (`Launch.objective`, read from MLflow once when the trial ends) and its
step-wise curve (`Launch.objective_curve`), and `Sweep.trial_attrs` keeps what a sampler or
pruner records on a trial (CMA-ES's optimizer state, ASHA's rungs). `study_for` turns them
into an in-memory study on every ask, so there is one source of truth, in the same
transactions as everything else, and nothing to migrate or to keep in step with it. A
rebuild costs milliseconds even at 1,000 trials (see `make bench`).

Determinism instead of a lock held across the ask: the sampler is seeded from the sweep's
seed and the number of the trial being asked, so the same rows give the same parameters.
A worker killed after the ask but before the new plan entry commits re-asks the very same
parameters on its next pass (nothing lost, nothing different); one killed after the commit
finds the planned trial without a launch and starts it (never twice: the (sweep, trial)
unique constraint); see `apps.launches.sweeps.advance`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from apps.launches.models import LIVE, Launch, Status, Sweep, SweepStrategy

optuna.logging.set_verbosity(optuna.logging.WARNING)

ADAPTIVE = frozenset({SweepStrategy.BAYES, SweepStrategy.CMAES})
EARLY_STOPPING_TYPES = ("median", "asha", "hyperband")


class ObjectiveState:
    """`Launch.objective_state`: what reading the trial's objective found."""

    UNREAD = ""  # not read yet (the trial has not ended, or MLflow was down when it did)
    OK = "ok"  # a finite value, in `Launch.objective`
    MISSING = "missing"  # the run never logged the metric
    INVALID = "invalid"  # its last value is NaN or ±inf


def distributions(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """Optuna distributions of a sweep's (cleaned) search space, in name order: the stored
    JSON's key order is the database's (PostgreSQL's jsonb sorts keys its own way, SQLite
    keeps them as given), and the order decides which random draw goes to which parameter,
    so sorting makes a seed ask the same trials on every database.

    A list of values → CategoricalDistribution over its distinct values (first occurrence
    kept). A range `{"min", "max", "log", "int", "step"?}` → IntDistribution when `int` is
    true (or both bounds are ints), else FloatDistribution; `log` and `step` as Optuna takes
    them (a step is ignored on a log scale, which Optuna does not combine). Raises ValueError
    for an entry that is neither."""
    found: dict[str, BaseDistribution] = {}
    for name, values in sorted(space.items()):
        if isinstance(values, list):
            choices: list[Any] = []
            for value in values:
                if not any(value == kept and type(value) is type(kept) for kept in choices):
                    choices.append(value)
            found[name] = CategoricalDistribution(choices)
        elif isinstance(values, dict):
            low, high, log = values["min"], values["max"], bool(values.get("log", False))
            step = values.get("step") if not log else None
            is_int = bool(values.get("int")) or (isinstance(low, int) and isinstance(high, int))
            if is_int:
                found[name] = IntDistribution(int(low), int(high), log=log, step=int(step or 1))
            else:
                found[name] = FloatDistribution(float(low), float(high), log=log, step=step)
        else:
            raise ValueError(f"{name}: neither a list of values nor a range")
    return found


def is_numeric(distribution: BaseDistribution) -> bool:
    """Whether CMA-ES can search `distribution` (a range, not a list of choices)."""
    return isinstance(distribution, IntDistribution | FloatDistribution)


def trial_seed(sweep_seed: int, number: int) -> int:
    """The sampler's seed for asking trial `number` (0-based) of a sweep seeded `sweep_seed`:
    stable across processes and Python versions (not `hash()`), below 2**32."""
    digest = hashlib.sha256(f"plinth-sweep:{sweep_seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def sampler_for(sweep: Sweep, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that asks trial `number` of `sweep`: TPE (multivariate, a constant liar
    so parallel trials spread out) for `bayes`, CMA-ES for `cmaes`, random otherwise."""
    seed = trial_seed(sweep.seed, number)
    if sweep.strategy == SweepStrategy.BAYES:
        with warnings.catch_warnings():  # both options are "experimental" in Optuna 4, and stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if sweep.strategy == SweepStrategy.CMAES:
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner_for(early_stopping: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's pruner for a sweep's (validated) `early_stopping`:

    - median: MedianPruner(n_startup_trials=`min_trials` (default 3), n_warmup_steps=`min_steps`)
    - asha: SuccessiveHalvingPruner(min_resource=`min_steps`, reduction_factor=`reduction_factor` (3))
    - hyperband: HyperbandPruner(min_resource=`min_steps`, max_resource=`max_steps` ("auto"),
      reduction_factor=`reduction_factor` (3))
    - anything else (no early stopping): NopPruner."""
    kind = early_stopping.get("type")
    min_steps = max(int(early_stopping.get("min_steps", 1)), 1)
    factor = int(early_stopping.get("reduction_factor", 3))
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(early_stopping.get("min_trials", 3)), n_warmup_steps=min_steps
        )
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_steps, reduction_factor=factor)
    if kind == "hyperband":
        max_steps = early_stopping.get("max_steps") or "auto"
        return optuna.pruners.HyperbandPruner(min_resource=min_steps, max_resource=max_steps, reduction_factor=factor)
    return optuna.pruners.NopPruner()


def curve_of(launch: Launch) -> dict[int, float]:
    """The trial's objective per step, as stored (`{"12": 0.41}` → `{12: 0.41}`); a step
    stored as null (it was NaN or ±inf) is NaN, which a pruner counts as a reason to prune."""
    return {
        int(step): math.nan if value is None else float(value) for step, value in (launch.objective_curve or {}).items()
    }


def _state_of(launch: Launch | None) -> tuple[TrialState, float | None]:
    if launch is None or launch.status in LIVE:
        return TrialState.RUNNING, None
    if launch.status == Status.PRUNED:
        return TrialState.PRUNED, None
    if launch.status == Status.SUCCEEDED:
        if launch.objective_state == ObjectiveState.OK and launch.objective is not None:
            return TrialState.COMPLETE, float(launch.objective)
        if launch.objective_state == ObjectiveState.UNREAD:
            return TrialState.RUNNING, None  # ended, its value not read yet: not a result
    return TrialState.FAIL, None


def frozen_trial(
    sweep: Sweep,
    dists: Mapping[str, BaseDistribution],
    number: int,
    launch: Launch | None,
    now: datetime.datetime,
) -> FrozenTrial:
    """Trial `number` of `sweep` (its launch, None while only planned) as an Optuna trial:
    RUNNING (planned, live, or ended with its objective not read yet), COMPLETE (succeeded
    with a finite objective), PRUNED, or FAIL (failed, cancelled, or an objective that is
    missing, NaN or inf). user_attrs: `launch` (the launch id or None) and `status`."""
    planned = sweep.planned[number]
    params = {name: planned[name] for name in dists if name in planned}
    state, value = _state_of(launch)
    start = (launch.started_at or launch.created_at) if launch is not None else now
    complete = (launch.finished_at or start) if state.is_finished() and launch is not None else None
    return FrozenTrial(
        number=-1,
        trial_id=-1,
        state=state,
        value=value,
        values=None,
        datetime_start=start,
        datetime_complete=complete,
        params=params,
        distributions={name: dists[name] for name in params},
        user_attrs={"launch": launch.pk if launch else None, "status": launch.status if launch else "planned"},
        system_attrs=dict((sweep.trial_attrs or {}).get(str(number), {})),
        intermediate_values=curve_of(launch) if launch is not None else {},
    )


def study_for(
    sweep: Sweep,
    trials: Iterable[Launch],
    *,
    number: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """The sweep's study, rebuilt in memory from its rows: one Optuna trial per entry of
    `sweep.planned`, numbered as the plan (trial 0 first), in the states `frozen_trial`
    gives; `trials` are the sweep's launches (any order; those without a `trial` index are
    ignored). Direction: `sweep.direction` (max → maximize). The sampler is the one that
    would ask trial `number` (default: the next one, `len(sweep.planned)`), so
    `study.ask()` on the result is deterministic; `pruner` defaults to the sweep's
    early-stopping pruner. Reads no MLflow; costs O(trials)."""
    by_index = {t.trial: t for t in trials if t.trial is not None}
    dists = distributions(sweep.space)
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=sampler_for(sweep, len(sweep.planned) if number is None else number),
        pruner=pruner if pruner is not None else pruner_for(sweep.early_stopping or {}),
        # Not the sweep's id: Hyperband assigns a trial's bracket from a hash of the study's
        # name and the trial's number, which must not change with where the row was stored.
        study_name="plinth-sweep",
        direction="maximize" if sweep.direction == "max" else "minimize",
    )
    now = datetime.datetime.now(tz=datetime.UTC)
    study.add_trials([frozen_trial(sweep, dists, i, by_index.get(i), now) for i in range(len(sweep.planned))])
    return study


# How many times `ask` asks the sampler for parameters no earlier trial has before it gives up.
MAX_ASKS = 30


class NothingNew(Exception):
    """The sampler proposed only parameters an earlier trial of the sweep already has,
    MAX_ASKS times in a row: planning stops (the message says why)."""


def parameters_key(params: Mapping[str, Any], names: Iterable[str]) -> str:
    """What makes two trials the same: their values of the space's parameters `names`
    (1, 1.0 and True stay different, as in the plan's JSON)."""
    return json.dumps({name: params.get(name) for name in names}, sort_keys=True)


def ask(sweep: Sweep, trials: Iterable[Launch]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask the sweep's sampler for the next trial (number `len(sweep.planned)`): its
    parameters (only the space's; JSON-ready, ints as ints) and the system attributes the
    sampler recorded on it (to be kept in `Sweep.trial_attrs`). Deterministic for the same
    rows.

    Never an earlier trial's parameters: a sampler over a discrete space (lists, int
    ranges) proposes the best point again once it has seen it. A proposal equal to an
    earlier planned trial's (whatever its state) is asked again, up to MAX_ASKS times, in
    the same in-memory study. The repeat is left RUNNING there, not told: TPE's constant
    liar counts a running trial as the worst value so far, which steers the next ask away
    from it (CMA-ES draws a fresh sample from its distribution on each ask). Telling it
    FAIL would be ignored by TPE (it proposes the same point again), and telling it the
    earlier result would only reinforce that point. The repeats are never stored: the study
    is rebuilt from Plinth's rows on every ask with the same seed, so a worker killed
    midway re-asks the very same sequence and lands on the same new trial (deterministic
    after a crash, nothing to clean up).

    Raises NothingNew when every one of the MAX_ASKS proposals repeats an earlier trial
    (the space is, as far as the sampler goes, exhausted); nothing else of its own
    (Optuna's errors are bugs here)."""
    dists = distributions(sweep.space)
    study = study_for(sweep, trials)
    seen = {parameters_key(entry, dists) for entry in sweep.planned}
    for _ in range(MAX_ASKS):
        trial = study.ask(dict(dists))
        params = {name: _plain(trial.params[name]) for name in dists}
        if parameters_key(params, dists) not in seen:
            attrs = dict(study.get_trials(deepcopy=False)[trial.number].system_attrs)
            # The asked trial stays RUNNING in this throwaway study: nothing to tell.
            return params, attrs
    raise NothingNew(
        f"the optimiser proposed only parameters earlier trials already ran ({MAX_ASKS} proposals in a row): "
        "the search space holds nothing new it would try"
    )


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so the plan stores as JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

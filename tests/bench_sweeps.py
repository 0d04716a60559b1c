"""The sweep optimiser's own overhead at 1,000 completed trials (`make bench`).

Every ask rebuilds the sweep's Optuna study from Plinth's rows (apps.launches.optimizer):
this measures that rebuild, one ask (rebuild + the sampler), the "tell" (a finished
trial's result becomes part of the next rebuild: its cost is one more trial in it) and one
early-stopping check of a running trial (rebuild + the median pruner), in milliseconds:
the best wall-clock time and the median CPU time of PLINTH_BENCH_REPEAT (5) runs. No database or MLflow is involved: the
rows are built in memory, as the reconciler would have loaded them.

Run alone: `.venv/bin/python -m tests.bench_sweeps`. Knob: PLINTH_BENCH_SWEEP_TRIALS (1000).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from tests.bench import print_table, setup

TRIALS = int(os.environ.get("PLINTH_BENCH_SWEEP_TRIALS", "1000"))
REPEAT = int(os.environ.get("PLINTH_BENCH_REPEAT", "5"))
STEPS = 20


def rows(strategy: str, trials: int) -> tuple[Any, list[Any]]:
    """An unsaved sweep with `trials` completed trials of the quadratic example (plus one
    running trial halfway through its curve), as the optimiser reads them."""
    from apps.launches.examples import quadratic
    from apps.launches.models import Launch, Status, Sweep

    rng = random.Random(1)
    space: dict[str, Any] = {
        "x": {"min": -5.0, "max": 5.0, "log": False, "int": False},
        "y": {"min": -5.0, "max": 5.0, "log": False, "int": False},
    }
    if strategy != "cmaes":
        space["batch"] = [16, 32, 64]
    planned = [
        {"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5), **({"batch": 32} if "batch" in space else {})}
        for _ in range(trials + 1)
    ]
    sweep = Sweep(
        pk=1,
        strategy=strategy,
        space=space,
        planned=planned,
        max_trials=trials + 10,
        parallelism=4,
        metric="loss",
        direction="min",
        seed=7,
        early_stopping={"type": "median", "min_steps": 3, "min_trials": 5},
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    launches = []
    for index, params in enumerate(planned):
        curve = quadratic.curve(params["x"], params["y"], STEPS)
        running = index == trials
        launches.append(
            Launch(
                pk=index + 1,
                trial=index,
                status=Status.RUNNING if running else Status.SUCCEEDED,
                objective=None if running else curve[-1],
                objective_state="" if running else "ok",
                objective_curve={str(s): v for s, v in enumerate(curve[: STEPS // 2 if running else STEPS])},
                created_at=start,
                started_at=start + timedelta(minutes=index),
                finished_at=None if running else start + timedelta(minutes=index + 1),
            )
        )
    return sweep, launches


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    """(best wall-clock ms, median CPU ms of this process): the CPU time is what the work
    costs on a machine shared with other jobs, the wall clock what a caller waited."""
    call()  # warm: imports, first-use caches
    wall, cpu = [], []
    for _ in range(REPEAT):
        began, began_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
    return min(wall), statistics.median(cpu)


def bench() -> list[tuple[str, str]]:
    from apps.launches import optimizer

    table: list[tuple[str, str]] = []
    for strategy in ("random", "bayes", "cmaes"):
        sweep, launches = rows(strategy, TRIALS)
        ended, running = launches[:-1], launches[-1]
        sweep.planned = sweep.planned[:TRIALS]  # the ask is for trial TRIALS, not yet planned
        rebuild = timed(partial(optimizer.study_for, sweep, ended))
        ask = timed(partial(optimizer.ask, sweep, ended))
        sweep.planned = [*sweep.planned, {"x": 0.0, "y": 0.0, **({"batch": 32} if "batch" in sweep.space else {})}]
        tell = timed(partial(optimizer.study_for, sweep, launches))

        def prune_check(s: Any = sweep, t: list[Any] = launches, r: Any = running) -> bool:
            study = optimizer.study_for(s, t)
            return bool(study.pruner.prune(study, study.get_trials(deepcopy=False)[r.trial]))

        prune = timed(prune_check)
        for label, (wall, cpu) in (
            ("rebuild the study", rebuild),
            ("ask one trial (rebuild + sampler)", ask),
            ("tell: next rebuild, one trial more", tell),
            ("early-stopping check of one trial", prune),
        ):
            table.append((f"{strategy}: {label} (ms)", f"{wall:.1f} wall (best) / {cpu:.1f} CPU (median)"))
    return table


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        setup(data_dir)
        print_table(f"Sweep optimiser overhead ({TRIALS} completed trials, in memory)", bench())


if __name__ == "__main__":
    main()

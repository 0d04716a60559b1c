"""The data zoo: one MLflow experiment seeded, through the plain MLflow client as people's
own scripts log, with every awkward kind of run a real team produces. Pages and endpoints
are walked over it (tests/tracking/test_zoo_walk.py, tests/e2e/test_zoo_console.py).

Runs, by label (each run's name is its label, but for `unicode`):

finite      loss falling over 30 steps (last 0.05), score 0.9, accuracy 0.85, f1 0.8
nan         loss 1.0, 0.5, then NaN (latest NaN); score NaN; a model version is made from it
posinf      loss 0.9, +inf (a spike at step 1), 0.4; score +inf
neginf      loss 0.7, then -inf; score -inf
sentinel    MLflow's float-max sentinels logged as numbers: score +1.797e308, loss -1.797e308
stepless    epoch_loss logged 5 times without a step (all at MLflow's default step 0)
single      accuracy and f1 logged once each
late        loss at steps 0..19 (max 1.0), finished, then loss 9.0 at step 3 after the end
parent      a parent run with three children (child-1..3) and a grandchild under child-1
many        2,000 params (log_batch takes at most 100 a call)
long        a 6,000-character param value and tag value
unicode     keys with slashes and umlauts (loss/train, Genauigkeit_ü, optim/name), name "Läuf/ü <b>1</b>"
empty       params, no metrics
deleted     deleted in MLflow
restored    deleted, then restored
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

FLOAT_MAX = 1.7976931348623157e308
PROJECT_SLUG = "demo/demo"  # the test project the zoo's model is tagged with (tests/conftest.py)
MANY_PARAMS = 2000
LONG = 6000
UNICODE_NAME = "Läuf/ü <b>1</b>"
CHILDREN = ("child-1", "child-2", "child-3")


@dataclass
class Zoo:
    """The seeded experiment: run ids by label, the registered model (tagged with the test
    project demo/demo) with version `finite_version` from `finite`, then `version` from `nan`."""

    experiment_id: str
    runs: dict[str, str]
    model: str
    version: int  # made from the `nan` run
    finite_version: int  # made from the `finite` run, registered first
    tracking_uri: str
    deleted: list[str] = field(default_factory=list)

    @property
    def active(self) -> dict[str, str]:
        """Labels and ids of the runs not deleted."""
        return {label: run_id for label, run_id in self.runs.items() if run_id not in self.deleted}


def _metrics(key: str, values: list[float], start: int, steps: list[int] | None = None) -> list[Metric]:
    return [
        Metric(key, value, start + i * 1000, (steps or list(range(len(values))))[i]) for i, value in enumerate(values)
    ]


def seed_zoo(tracking_uri: str) -> Zoo:
    """Create and fill a new zoo experiment on the server at `tracking_uri` (a unique name,
    so several test modules can each have one). Takes a few seconds."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = str(client.create_experiment(f"tests/zoo/{uuid.uuid4().hex[:8]}"))
    runs: dict[str, str] = {}
    now = int(time.time() * 1000) - 3_600_000

    def start(label: str, name: str | None = None, tags: dict[str, str] | None = None) -> str:
        # Start times one second apart, in seeding order: the runs table's order is stable.
        started = now + len(runs) * 1000
        run = client.create_run(experiment_id, start_time=started, run_name=name or label, tags=tags or {})
        runs[label] = run.info.run_id
        return run.info.run_id

    def end(run_id: str) -> None:
        client.set_terminated(run_id, end_time=now + len(runs) * 1000 + 500)

    run_id = start("finite")
    client.log_batch(
        run_id,
        metrics=[
            *_metrics("loss", [round(1 / (1 + s) + 0.05 - 1 / 30, 6) for s in range(30)], now),
            Metric("score", 0.9, now, 0),
            Metric("accuracy", 0.85, now, 0),
            Metric("f1", 0.8, now, 0),
        ],
        params=[Param("lr", "0.01"), Param("optimizer", "adam")],
        tags=[RunTag("team.note", "baseline")],
    )
    end(run_id)

    run_id = start("nan")
    client.log_batch(
        run_id,
        metrics=[*_metrics("loss", [1.0, 0.5, math.nan], now), Metric("score", math.nan, now, 0)],
        params=[Param("lr", "0.1"), Param("optimizer", "sgd")],
    )
    end(run_id)
    nan_run = run_id

    run_id = start("posinf")
    client.log_batch(
        run_id,
        metrics=[*_metrics("loss", [0.9, math.inf, 0.4], now), Metric("score", math.inf, now, 0)],
        params=[Param("lr", "1.0")],
    )
    end(run_id)

    run_id = start("neginf")
    client.log_batch(run_id, metrics=[*_metrics("loss", [0.7, -math.inf], now), Metric("score", -math.inf, now, 0)])
    end(run_id)

    run_id = start("sentinel")
    client.log_batch(run_id, metrics=[Metric("score", FLOAT_MAX, now, 0), Metric("loss", -FLOAT_MAX, now, 0)])
    end(run_id)

    run_id = start("stepless")
    for index, value in enumerate([0.9, 0.7, 0.6, 0.55, 0.5]):
        client.log_metric(run_id, "epoch_loss", value, timestamp=now + index * 60_000)  # step 0 each time
    end(run_id)

    run_id = start("single")
    client.log_metric(run_id, "accuracy", 0.83, timestamp=now)
    client.log_metric(run_id, "f1", 0.79, timestamp=now)
    end(run_id)

    run_id = start("late")
    client.log_batch(run_id, metrics=_metrics("loss", [round(1 - s / 20, 4) for s in range(20)], now))
    end(run_id)
    client.log_metric(run_id, "loss", 9.0, timestamp=now + 100_000, step=3)  # an earlier step, after the end

    parent = start("parent", tags={"team.kind": "sweep"})
    client.log_batch(parent, metrics=[Metric("score", 0.7, now, 0)])
    for index, label in enumerate(CHILDREN):
        child = start(label, tags={"mlflow.parentRunId": parent})
        client.log_batch(
            child,
            metrics=[
                *_metrics("loss", [0.8 - index * 0.1, 0.6 - index * 0.1], now),
                Metric("score", 0.6 + index * 0.05, now, 0),
            ],
            params=[Param("depth", str(index + 2))],
        )
        end(child)
    grandchild = start("grandchild", tags={"mlflow.parentRunId": runs["child-1"]})
    client.log_batch(grandchild, metrics=[Metric("score", 0.5, now, 0)])
    end(grandchild)
    end(parent)

    run_id = start("many")
    keys = [f"p{index:04d}" for index in range(MANY_PARAMS)]
    for chunk in range(0, MANY_PARAMS, 100):
        client.log_batch(run_id, params=[Param(key, str(int(key[1:]) * 3)) for key in keys[chunk : chunk + 100]])
    client.log_metric(run_id, "accuracy", 0.81, timestamp=now)
    end(run_id)

    run_id = start("long")
    client.log_param(run_id, "prompt", ("long value " * 600)[:LONG])
    client.set_tag(run_id, "team.description", ("x" * LONG))
    client.log_metric(run_id, "accuracy", 0.8, timestamp=now)
    end(run_id)

    run_id = start("unicode", name=UNICODE_NAME)
    client.log_batch(
        run_id,
        metrics=[*_metrics("loss/train", [0.9, 0.3], now), Metric("Genauigkeit_ü", 0.77, now, 0)],
        params=[Param("optim/name", "adam"), Param("größe", "groß")],
        tags=[RunTag("team/owner", "jürgen")],
    )
    end(run_id)

    run_id = start("empty")
    client.log_batch(run_id, params=[Param("lr", "0.5")])
    end(run_id)

    deleted = start("deleted")
    client.log_metric(deleted, "loss", 0.3, timestamp=now)
    end(deleted)
    client.delete_run(deleted)

    restored = start("restored")
    client.log_metric(restored, "loss", 0.35, timestamp=now)
    end(restored)
    client.delete_run(restored)
    client.restore_run(restored)

    model = f"zoo-{uuid.uuid4().hex[:10]}"
    client.create_registered_model(model, tags={"plinth.project": PROJECT_SLUG})
    first = client.create_model_version(model, f"runs:/{runs['finite']}/model", run_id=runs["finite"])
    made = client.create_model_version(model, f"runs:/{nan_run}/model", run_id=nan_run)
    return Zoo(experiment_id, runs, model, int(made.version), int(first.version), tracking_uri, deleted=[deleted])

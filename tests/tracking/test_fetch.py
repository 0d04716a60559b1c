"""Reading histories in few calls: MLflow's get-history-bulk answers at most `limit`
points a call, ordered by run; a full answer is continued, a run longer than a whole call
is paged, and a run MLflow refuses does not take the others down. (limit is 25,000 in
production; small here, against the FakeMlflow, to reach every branch.)"""

from __future__ import annotations

import random
from typing import Any

import pytest

from apps.tracking.fetch import History, Want, read_histories
from apps.tracking.gateway import MlflowError
from tests.tracking.fakes import FakeMlflow, make_run


def as_pairs(run_id: str, key: str, history: History) -> tuple[list[int], list[float]]:
    return history.steps, history.values


def test_every_history_arrives_whole_whatever_the_call_limit(fake_mlflow: FakeMlflow, settings: Any) -> None:
    settings.PLINTH_MLFLOW_THREADS = 3
    rng = random.Random(7)
    lengths = {f"{i:032x}": rng.choice([0, 1, 2, 5, 9, 13, 30]) for i in range(40)}
    for run_id, n in lengths.items():
        fake_mlflow.add(
            make_run(run_id, "1", metrics={"loss": [rng.random() for _ in range(n)], "acc": [0.5] * (n // 2)})
        )
    wants = [Want(r, key, estimate=3) for r in lengths for key in ("loss", "acc")]  # estimates far too low
    found, errors = read_histories(wants, as_pairs, limit=7)
    assert errors == {}
    for run_id, n in lengths.items():
        loss = [v for _, _, v in fake_mlflow.runs[run_id].history["loss"]]
        assert found[(run_id, "loss")] == (list(range(n)), loss)
        assert found[(run_id, "acc")] == (list(range(n // 2)), [0.5] * (n // 2))
    assert fake_mlflow.calls["get_metric_history"] > 0, "a run longer than a call should have been paged"


def test_out_of_order_steps_are_ordered_by_step(fake_mlflow: FakeMlflow) -> None:
    run = fake_mlflow.add(make_run("a" * 32, "1"))
    run.history["loss"] = [(2, 100, 0.2), (0, 101, 1.0), (1, 102, 0.5), (1, 103, 0.4)]  # logged in that order
    found, _ = read_histories([Want(run.run_id, "loss", 3)], as_pairs)
    assert found[(run.run_id, "loss")] == ([0, 1, 1, 2], [1.0, 0.5, 0.4, 0.2])


def test_a_run_mlflow_refuses_is_reported_and_the_others_still_arrive(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"{i:032x}" for i in range(5)]
    for run_id in ids:
        fake_mlflow.add(make_run(run_id, "1", metrics={"loss": [1.0, 0.5]}))
    original = fake_mlflow.get_history_bulk

    def refusing(run_ids: list[str], key: str, max_results: int = 25_000) -> list[dict[str, Any]]:
        if ids[2] in run_ids:
            raise MlflowError("Run is deleted", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        return original(run_ids, key, max_results)

    monkeypatch.setattr(fake_mlflow, "get_history_bulk", refusing)
    FakeMlflow.install(fake_mlflow, monkeypatch)
    found, errors = read_histories([Want(r, "loss", 2) for r in ids], as_pairs)
    assert errors == {(ids[2], "loss"): "Run is deleted"}
    assert sorted(run_id for run_id, _ in found) == sorted(set(ids) - {ids[2]})

"""The gateway's history reads survive one slow answer from a busy MLflow; nothing else
is retried, and MLflow unreachable stays a MlflowUnavailable (a banner, a 503)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from apps.tracking.gateway import MlflowGateway, MlflowUnavailable


class Answer:
    status_code = 200
    content = b'{"metrics": [{"run_id": "r", "key": "loss", "step": 0, "timestamp": 1, "value": NaN}]}'

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Flaky:
    """The first `timeouts` requests time out; later ones answer. `seen`: endpoints asked."""

    timeouts: int = 1
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Flaky:
    state = Flaky()

    def request(session: requests.Session, method: str, url: str, **kwargs: Any) -> Answer:
        state.seen.append(url.rsplit("/", 1)[-1])
        if len(state.seen) <= state.timeouts:
            raise requests.ReadTimeout("slow")
        return Answer()

    monkeypatch.setattr(requests.Session, "request", request)
    return state


def test_a_history_read_is_tried_again_once_after_a_timeout(flaky: Flaky) -> None:
    points = MlflowGateway("http://mlflow.test").get_history_bulk(["r"], "loss")
    assert flaky.seen == ["get-history-bulk", "get-history-bulk"]
    assert math.isnan(points[0]["value"])  # MLflow's bare NaN token arrives as a float


def test_two_timeouts_make_mlflow_unavailable(flaky: Flaky) -> None:
    flaky.timeouts = 2
    with pytest.raises(MlflowUnavailable):
        MlflowGateway("http://mlflow.test").get_history_bulk(["r"], "loss")


def test_other_calls_are_not_retried(flaky: Flaky) -> None:
    with pytest.raises(MlflowUnavailable):
        MlflowGateway("http://mlflow.test").search_runs(["1"])
    assert flaky.seen == ["search"]

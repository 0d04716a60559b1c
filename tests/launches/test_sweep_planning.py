"""Sweep planning never repeats a trial: a discrete space is sampled without replacement
(and run once, with a message, when max_trials exceeds it), a space with ranges refuses
exact repeats, and every trial gets its own seed unless the sweep pins it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import Team, User
from apps.launches.models import Launch, Sweep, Template
from apps.launches.sweeps import plan_trials
from apps.projects.models import Project
from tests.conftest import api_for
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db

PARAMETERS = {
    "lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
    "epochs": {"type": "int", "default": 30, "min": 1, "max": 500},
    "batch": {"type": "choice", "choices": [16, 32, 64], "default": 32},
    "seed": {"type": "int", "default": 0, "min": 0, "max": 2**31 - 1},
}


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters=PARAMETERS)


def keys(trials: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(t, sort_keys=True) for t in trials]


def post_sweep(user: User, **body: Any) -> Any:
    payload = {"project": "demo/demo", "template": "train", "parallelism": 1, "max_trials": 6, **body}
    return api_for(user).post("/api/v1/sweeps/", payload, format="json")


def test_a_random_sweep_over_two_epochs_runs_each_once_and_says_so(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = post_sweep(ada, strategy="random", space={"epochs": [20, 21]}, seed=3)

    assert response.status_code == 201, response.json()
    body = response.json()
    sweep = Sweep.objects.get(pk=body["id"])
    assert sorted(t["epochs"] for t in sweep.planned) == [20, 21]
    assert sweep.max_trials == 2 and body["progress"]["planned"] == 2
    assert "only 2 distinct combinations" in body["status_reason"]
    assert "max_trials is 6" in sweep.status_reason
    page = api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/").json()
    assert page["status_reason"] == sweep.status_reason


def test_the_sweep_page_shows_the_plan_message(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    from tests.conftest import client_for

    sweep = Sweep.objects.get(pk=post_sweep(ada, strategy="grid", space={"epochs": [20, 21, 20]}).json()["id"])
    html = client_for(ada).get(reverse("launches:sweep-detail", args=[sweep.pk])).content.decode()
    assert "only 2 distinct combinations" in html


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_random_sampling_over_a_discrete_space_never_repeats_a_trial(seed: int) -> None:
    space = {"batch": [16, 32, 64], "epochs": [10, 20], "lr": [0.1, 0.01]}  # 12 combinations
    planned = plan_trials("random", space, 10, seed)
    assert len(planned) == 10
    assert len(set(keys(planned))) == 10
    everything = plan_trials("random", space, 50, seed)
    assert len(everything) == 12 and len(set(keys(everything))) == 12


def test_a_grid_never_repeats_a_trial_even_when_a_list_repeats_a_value() -> None:
    planned = plan_trials("grid", {"epochs": [20, 21, 20], "batch": [16, 16]}, 100, 0)
    assert planned == [{"epochs": 20, "batch": 16}, {"epochs": 21, "batch": 16}]


def test_a_mixed_space_refuses_exact_repeats_and_stops_when_the_range_is_exhausted() -> None:
    space = {"epochs": {"min": 20, "max": 21, "log": False, "int": True}, "batch": [16, 32]}
    planned = plan_trials("random", space, 6, 11)
    assert len(planned) == 4  # 2 epochs x 2 batches, each once
    assert len(set(keys(planned))) == 4
    continuous = plan_trials("random", {"lr": {"min": 1e-5, "max": 1.0, "log": True, "int": False}}, 50, 1)
    assert len(continuous) == 50


def test_every_trial_gets_a_distinct_seed_unless_the_sweep_pins_it(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    free = post_sweep(ada, strategy="grid", space={"batch": [16, 32, 64], "epochs": [5, 6]}, max_trials=6)
    assert free.status_code == 201, free.json()
    seeds = [t["seed"] for t in Sweep.objects.get(pk=free.json()["id"]).planned]
    assert len(seeds) == 6 and len(set(seeds)) == 6
    assert all(0 <= s <= 2**31 - 1 for s in seeds)

    pinned = post_sweep(ada, strategy="grid", space={"batch": [16, 32]}, parameters={"seed": 42}, max_trials=2)
    assert pinned.status_code == 201, pinned.json()
    sweep = Sweep.objects.get(pk=pinned.json()["id"])
    assert all("seed" not in t for t in sweep.planned)
    assert sweep.base_parameters["seed"] == 42


def test_the_first_trial_launch_carries_its_own_seed(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    fake_backend: Any,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = post_sweep(ada, strategy="random", space={"epochs": [20, 21]}, parallelism=2, seed=9)
    assert response.status_code == 201, response.json()
    launches = list(Launch.objects.filter(sweep_id=response.json()["id"]))
    assert len(launches) == 2
    assert len({(lnch.parameters["epochs"], lnch.parameters["seed"]) for lnch in launches}) == 2
    assert launches[0].parameters["seed"] != launches[1].parameters["seed"]

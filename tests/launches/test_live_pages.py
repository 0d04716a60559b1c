"""The live launch and sweep pages through the client, as htmx polls them: a poll gets only
its fragment (chosen by the element it swaps, `HX-Target`), everything that changes
together comes in that one answer, and the answer after the end is the last one (286,
without a polling trigger).

The compute backend is the stateful FakeBackend; sweeps read their trials' metrics from the
real MLflow server (`mlflow_up`), where the test logs them as a training script would."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from mlflow import MlflowClient

from apps.accounts.models import Team, User
from apps.launches import services, tasks
from apps.launches.models import Launch, Status, Sweep, SweepStatus, Template
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template
from tests.tracking.conftest import link

pytestmark = pytest.mark.django_db

POLL = {"HX-Request": "true"}


def poll(user: User, url: str, target: str) -> tuple[int, str]:
    response = client_for(user).get(url, headers={**POLL, "HX-Target": target})
    return response.status_code, response.content.decode()


def polls_again(html: str) -> bool:
    return "hx-trigger" in html


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters={"lr": {"type": "float", "default": 0.1}})


# --- a launch ------------------------------------------------------------------------------
@pytest.fixture
def running(
    ada: User, linked_project: Project, train: Template, fake_backend: FakeBackend, fake_mlflow: FakeMlflow
) -> Launch:
    launch = services.create_launch(ada, linked_project, train)
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()
    launch.refresh_from_db()
    assert launch.status == Status.RUNNING
    return launch


def test_a_launch_poll_gets_status_actions_and_log_tail_in_one_fragment(
    ada: User, running: Launch, fake_backend: FakeBackend
) -> None:
    fake_backend.output[running.pk] = [f"line {i}" for i in range(1, 301)]
    url = f"/launches/{running.pk}/"

    code, html = poll(ada, url, "status")

    assert code == 200
    assert html.lstrip().startswith('<section class="card" id="status"'), "only the fragment, not the page"
    assert "<html" not in html and "Parameters" not in html
    assert polls_again(html) and f'hx-get="{url}"' in html
    # The actions and the log come with it, out of band, so all three show the same moment.
    assert re.search(r'<div class="actions" id="actions" hx-swap-oob="true">', html)
    assert ">Cancel</button>" in html
    assert re.search(r'<section class="card" id="logs" hx-swap-oob="true">', html)
    log = html.split("data-follow-tail>", 1)[1].split("</pre>", 1)[0]
    assert log.splitlines()[-1] == "line 300", "the tail ends with the newest line"
    assert "line 100\n" not in log, "only the last 200 lines"

    page = client_for(ada).get(url).content.decode()
    assert "<html" in page and "hx-swap-oob" not in page, "the page itself has nothing out of band"
    assert 'id="log-text"' in page and "data-follow-tail" in page


def test_the_poll_after_a_launch_ended_is_the_last_and_shows_the_final_lines(
    ada: User, running: Launch, fake_backend: FakeBackend
) -> None:
    fake_backend.output[running.pk] = ["epoch 1", "accuracy 0.97", "done"]
    fake_backend.set_state(running.pk, "succeeded", exit_code=0)
    tasks.sync_launches()

    code, html = poll(ada, f"/launches/{running.pk}/", "status")

    assert code == 286, "htmx stops polling"
    assert not polls_again(html)
    assert 'data-status="succeeded"' in html
    assert ">Cancel</button>" not in html, "nothing to cancel any more"
    assert html.split("data-follow-tail>", 1)[1].split("</pre>", 1)[0].splitlines()[-1] == "done"


def test_a_launch_page_without_htmx_or_for_another_target_is_the_whole_page(ada: User, running: Launch) -> None:
    for headers in ({}, POLL, {**POLL, "HX-Target": "elsewhere"}):
        response = client_for(ada).get(f"/launches/{running.pk}/", headers=headers)
        assert response.status_code == 200 and "<html" in response.content.decode(), headers
        assert "hx-swap-oob" not in response.content.decode(), "only the polled fragment carries out-of-band parts"
        assert "HX-Target" in response.headers["Vary"]


def test_a_launch_page_links_its_run_in_plinth_and_names_its_job_once(ada: User, running: Launch) -> None:
    html = client_for(ada).get(f"/launches/{running.pk}/").content.decode()
    project = running.project
    assert f'href="/runs/{project.team.slug}/{project.slug}/{running.mlflow_run_id}/"' in html
    heading = re.search(r"<h1>(.*?)</h1>", html, re.S)
    assert heading is not None and heading.group(1).count(running.job_name) == 1, heading


def test_a_launch_fragment_is_scoped_like_the_page(omar: User, running: Launch) -> None:
    code, _ = poll(omar, f"/launches/{running.pk}/", "status")
    assert code == 404


# --- a sweep -------------------------------------------------------------------------------
@pytest.fixture
def mlflow_project(project: Project, mlflow_up: str) -> Project:
    experiment = MlflowClient(tracking_uri=mlflow_up).create_experiment(f"live-{uuid.uuid4().hex[:10]}")
    return link(project, experiment)


def start_sweep(user: User, capture: Any, **changes: Any) -> Sweep:
    body: dict[str, Any] = {
        "project": "demo/demo",
        "template": "train",
        "strategy": "grid",
        "space": {"lr": [0.001, 0.01, 0.1, 1.0]},
        "max_trials": 4,
        "parallelism": 2,
        "metric": "accuracy",
    }
    body.update(changes)
    with capture(execute=True):  # the first trials start when the sweep commits
        response = api_for(user).post("/api/v1/sweeps/", body, format="json")
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def finish_trials(sweep: Sweep, fake_backend: FakeBackend, mlflow_up: str, capture: Any) -> None:
    """Each live trial logs its accuracy to MLflow and ends, until the sweep has ended."""
    client = MlflowClient(tracking_uri=mlflow_up)
    for _ in range(10):
        if Sweep.objects.get(pk=sweep.pk).status != SweepStatus.RUNNING:
            return
        for trial in Launch.objects.filter(sweep=sweep, pk__in=fake_backend.live_pks()):
            client.log_metric(trial.mlflow_run_id, "accuracy", 0.5 + trial.parameters["lr"] / 4)
            fake_backend.set_state(trial.pk, "succeeded", exit_code=0)
        with capture(execute=True):
            tasks.sync_launches()
    raise AssertionError("the sweep never ended")


def trial_rows(html: str) -> int:
    return len(re.findall(r'<tr><td>\d+</td><td><a href="/launches/\d+/"', html))


@pytest.mark.mlflow
def test_a_sweep_poll_updates_everything_together_and_the_last_one_shows_every_trial_and_the_chart(
    ada: User,
    mlflow_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    eager_tasks: None,
    mlflow_up: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(ada, django_capture_on_commit_callbacks)
    url = f"/launches/sweeps/{sweep.pk}/"

    code, html = poll(ada, url, "sweep")
    assert code == 200 and html.lstrip().startswith('<div id="sweep"'), "only the live region"
    assert "<html" not in html and polls_again(html)
    assert "Cancel sweep" in html and trial_rows(html) == 2
    assert "The chart appears once a trial has logged" in html and "data-chart=" not in html

    finish_trials(sweep, fake_backend, mlflow_up, django_capture_on_commit_callbacks)

    code, html = poll(ada, url, "sweep")
    assert code == 286, "the sweep ended: htmx stops polling"
    assert not polls_again(html)
    assert 'data-status="succeeded"' in html and "4 of 4" in html
    assert trial_rows(html) == 4 and "No trial started yet" not in html
    assert "Cancel sweep" not in html
    assert "Best so far by <code>accuracy</code> (max): <strong>0.7500</strong>" in html
    chart = re.search(r'<div id="sweep-chart" class="chart" data-chart="([^"]+)"', html)
    assert chart, "the chart's container"
    data = json.loads(html.split(f'<script id="{chart.group(1)}" type="application/json">', 1)[1].split("</script>")[0])
    figure = data.get("figure", data)  # a Plotly figure, or a chart wrapping one
    assert sorted(figure["data"][0]["dimensions"][-1]["values"]) == pytest.approx([0.50025, 0.5025, 0.525, 0.75])


@pytest.mark.mlflow
def test_a_cancelled_sweep_polls_until_its_last_trial_has_stopped(
    ada: User,
    mlflow_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    eager_tasks: None,
    mlflow_up: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(ada, django_capture_on_commit_callbacks)
    url = f"/launches/sweeps/{sweep.pk}/"
    with django_capture_on_commit_callbacks() as stopping:  # the backend is asked after the poll below
        assert client_for(ada).post(f"{url}cancel/").status_code == 302

    code, html = poll(ada, url, "sweep")
    assert code == 200 and polls_again(html), "its trials are still being stopped"
    assert 'data-status="cancelled"' in html and "Cancel sweep" not in html

    with django_capture_on_commit_callbacks(execute=True):
        for callback in stopping:  # the backend stops the trials
            callback()
    assert not Launch.objects.filter(sweep=sweep).exclude(status=Status.CANCELLED).exists()
    code, html = poll(ada, url, "sweep")
    assert code == 286 and not polls_again(html)

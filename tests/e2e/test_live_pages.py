"""Live pages in a real browser converge without a reload and then stop polling:

- a sweep page opened at the start shows, at the end, every trial, the chart, the best value
  and no "Cancel sweep" — status, progress, trials, chart and actions change together;
- a running launch's log box shows its tail and keeps the last line visible across
  refreshes, keeps the reader's place when they scrolled up, and a finished launch shows its
  final lines without scrolling the page.

The compute backend is the stateful FakeBackend (the test moves the jobs along and runs the
reconciler's pass itself); tasks run eagerly; a sweep's trials log their metric to the real
MLflow server as training code would.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from mlflow import MlflowClient
from playwright.sync_api import Locator, Page, Request, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import Team, User
from apps.launches import services, tasks
from apps.launches.models import Launch, Status, Sweep, SweepStatus, Template
from apps.projects.models import Project
from tests.conftest import api_for
from tests.e2e.test_launch_page import sign_in
from tests.launches.conftest import (
    FakeBackend,
    FakeMlflow,
    eager_tasks,
    fake_backend,
    fake_mlflow,
    linked_project,
    make_template,
)
from tests.tracking.conftest import link

# Fixtures of the launches tests, used here.
__all__ = ["eager_tasks", "fake_backend", "fake_mlflow", "linked_project"]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SWEEP_POLL_SECONDS = 5  # hx-trigger="every 5s" on the sweep's live region
LAUNCH_POLL_SECONDS = 3  # hx-trigger="every 3s" on the launch's status


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters={"lr": {"type": "float", "default": 0.1}})


def polls_of(page: Page, path: str) -> list[str]:
    """The htmx polls of `path` the page makes from now on (their HX-Target)."""
    seen: list[str] = []

    def note(request: Request) -> None:
        if request.headers.get("hx-request") and re.match(rf"https?://[^/]+{re.escape(path)}$", request.url):
            seen.append(request.headers.get("hx-target", ""))

    page.on("request", note)
    return seen


def mark_page(page: Page) -> None:
    # A flag on the window survives htmx swaps but not a page load: proof nothing reloaded.
    page.evaluate("() => { window.__plinthSamePage = true; }")


def same_page(page: Page) -> bool:
    return bool(page.evaluate("() => window.__plinthSamePage === true"))


# --- the sweep page ------------------------------------------------------------------------
@pytest.mark.mlflow
def test_a_sweep_page_opened_at_the_start_shows_all_trials_and_the_chart_at_the_end_without_a_reload(
    page: Page,
    live_server: LiveServer,
    ada: User,
    project: Project,
    train: Template,
    fake_backend: FakeBackend,
    eager_tasks: None,
    mlflow_up: str,
) -> None:
    mlflow = MlflowClient(tracking_uri=mlflow_up)
    link(project, mlflow.create_experiment(f"live-sweep-{uuid.uuid4().hex[:10]}"))
    response = api_for(ada).post(
        "/api/v1/sweeps/",
        {
            "project": "demo/demo",
            "template": "train",
            "strategy": "grid",
            "space": {"lr": [0.001, 0.01, 0.1, 1.0]},
            "max_trials": 4,
            "parallelism": 2,
            "metric": "accuracy",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get(pk=response.json()["id"])
    path = f"/launches/sweeps/{sweep.pk}/"

    sign_in(page, live_server, ada)
    polls = polls_of(page, path)
    page.goto(f"{live_server.url}{path}")
    live = page.locator("#sweep")
    rows = live.locator("table tbody tr")
    expect(rows).to_have_count(2)  # the first `parallelism` trials
    expect(live.get_by_role("button", name="Cancel sweep")).to_be_visible()
    expect(live.locator(".chart")).to_have_count(0)
    mark_page(page)

    # The trials log their metric and end, two at a time, as the reconciler sees them.
    for _ in range(10):
        if Sweep.objects.get(pk=sweep.pk).status != SweepStatus.RUNNING:
            break
        for trial in Launch.objects.filter(sweep=sweep, pk__in=fake_backend.live_pks()):
            mlflow.log_metric(trial.mlflow_run_id, "accuracy", 0.5 + trial.parameters["lr"] / 4)
            fake_backend.set_state(trial.pk, "succeeded", exit_code=0)
        tasks.sync_launches()
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.SUCCEEDED

    wait_ms = (3 * SWEEP_POLL_SECONDS + 5) * 1000
    expect(live.locator("[data-status]")).to_have_attribute("data-status", "succeeded", timeout=wait_ms)
    # Everything else arrived in the same swap: no second look needed.
    expect(live.locator("[data-progress]")).to_have_text("4 of 4")
    expect(rows).to_have_count(4)
    expect(rows.filter(has_text="Succeeded")).to_have_count(4)
    expect(live.locator("[data-best] strong")).to_have_text("0.7500")
    expect(live.get_by_role("button", name="Cancel sweep")).to_have_count(0)
    chart = live.locator("#sweep-chart.chart[data-chart]")
    expect(chart).to_have_count(1)
    expect(chart.locator(".main-svg").first).to_be_attached()  # Plotly drew it
    assert same_page(page), "the page reloaded"

    # The last answer stopped the polling.
    expect(live).not_to_have_attribute("hx-trigger", re.compile(".*"))
    seen = len(polls)
    page.wait_for_timeout((SWEEP_POLL_SECONDS + 1) * 1000)
    assert polls[seen:] == [], f"still polling after the sweep ended: {polls[seen:]}"
    assert set(polls) == {"sweep"}, polls


# --- the launch page's log -----------------------------------------------------------------
AT_END = "(box) => box.scrollHeight - box.scrollTop - box.clientHeight <= 2"

# Where the box's last character is, against the box and the window (a Range over it).
LAST_LINE = """(box) => {
  const text = box.firstChild, range = document.createRange();
  range.setStart(text, text.length - 1);
  range.setEnd(text, text.length);
  const line = range.getBoundingClientRect(), shown = box.getBoundingClientRect();
  return {inBox: line.top >= shown.top && line.bottom <= shown.bottom + 1,
          inWindow: line.bottom <= window.innerHeight && line.top >= 0,
          pageScrolled: window.scrollY};
}"""


def last_line(log: Locator) -> dict[str, Any]:
    found: dict[str, Any] = log.evaluate(LAST_LINE)
    return found


def test_a_running_launchs_log_keeps_the_last_line_visible_across_refreshes(
    page: Page,
    live_server: LiveServer,
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
) -> None:
    launch = services.create_launch(ada, linked_project, train)
    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()
    assert Launch.objects.get(pk=launch.pk).status == Status.RUNNING
    output = fake_backend.output[launch.pk] = [f"step {i:04d} loss {1 / i:.4f}" for i in range(1, 301)]
    path = f"/launches/{launch.pk}/"

    sign_in(page, live_server, ada)
    polls = polls_of(page, path)
    page.goto(f"{live_server.url}{path}")
    log = page.locator("#logs pre.log")
    expect(log).to_contain_text("step 0300")
    assert log.evaluate(AT_END), "the box opens at its tail"
    assert last_line(log)["inBox"], "the newest line is the one in view"
    mark_page(page)

    # New lines arrive with a poll: the box stays at its tail.
    output.extend(f"step {i:04d} loss {1 / i:.4f}" for i in range(301, 321))
    expect(log).to_contain_text("step 0320", timeout=(3 * LAUNCH_POLL_SECONDS + 5) * 1000)
    assert log.evaluate(AT_END) and last_line(log)["inBox"], "the refresh lost the tail"

    # The reader scrolls up: refreshes keep their place.
    log.evaluate("(box) => { box.scrollTop = 40; }")
    output.extend(f"step {i:04d} loss {1 / i:.4f}" for i in range(321, 341))
    expect(log).to_contain_text("step 0340", timeout=(3 * LAUNCH_POLL_SECONDS + 5) * 1000)
    assert log.evaluate("(box) => box.scrollTop") == 40, "a refresh moved the reader"
    assert not log.evaluate(AT_END)

    # Back at the end, the launch finishes: its final lines show without scrolling the page.
    log.evaluate("(box) => { box.scrollTop = box.scrollHeight; }")
    output.extend(["accuracy 0.971", "done"])
    fake_backend.set_state(launch.pk, "succeeded", exit_code=0)
    tasks.sync_launches()
    status = page.locator("#status [data-status]")
    expect(status).to_have_attribute("data-status", "succeeded", timeout=(3 * LAUNCH_POLL_SECONDS + 5) * 1000)
    expect(log).to_contain_text("done")
    assert log.evaluate(AT_END)
    final = last_line(log)
    assert final["inBox"] and final["inWindow"] and final["pageScrolled"] == 0, final
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)  # the actions came along
    assert same_page(page), "the page reloaded"

    seen = len(polls)
    page.wait_for_timeout((2 * LAUNCH_POLL_SECONDS + 1) * 1000)
    assert polls[seen:] == [], f"still polling after the launch ended: {polls[seen:]}"
    assert set(polls) == {"status"}, polls

"""The runs and compare pages in a real browser: a viewer ticks three runs that a plain
MLflow client logged, opens the comparison and sees its charts drawn by Plotly."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.django_db(transaction=True)]


def log_runs(tracking_uri: str, count: int) -> tuple[str, list[str]]:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment(f"tests/e2e-compare/{uuid.uuid4().hex[:8]}")
    ids = []
    for i in range(count):
        run_id = client.create_run(experiment, run_name=f"trial-{i}").info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric("loss", 1 / (1 + s) + i / 10, now + s, s) for s in range(50)]
            + [Metric("accuracy", 0.6 + i / 20, now, 0)],
            params=[Param("lr", str(10**-i)), Param("batch", "32")],
        )
        client.set_terminated(run_id)
        ids.append(run_id)
    return str(experiment), ids


def sign_in(page: Page, live_server: LiveServer, user: User) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {user.username}")


def test_viewer_selects_three_runs_and_compares_them_with_charts(
    page: Page, live_server: LiveServer, vic: User, project: Project, mlflow_up: str
) -> None:
    experiment, ids = log_runs(mlflow_up, 4)
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id=experiment, mlflow_state=ExperimentState.LINKED)
    sign_in(page, live_server, vic)

    page.goto(f"{live_server.url}/runs/demo/demo/?order_by=attributes.run_name+ASC")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Runs")
    boxes = page.locator('input[name="run_ids"]')
    expect(boxes).to_have_count(4)
    select_all = page.get_by_label("Select all runs on this page")
    select_all.check()
    expect(page.locator("[data-selected-count]")).to_have_text("4 selected")
    select_all.uncheck()
    expect(page.get_by_role("button", name="Compare selected")).to_be_disabled()
    for name in ("trial-0", "trial-1", "trial-3"):
        page.get_by_label(f"Select {name}").check()
    expect(page.locator("[data-selected-count]")).to_have_text("3 selected")
    page.get_by_role("button", name="Compare selected").click()

    expect(page).to_have_url(re.compile(rf"^{re.escape(live_server.url)}/runs/compare/\?"))
    assert parse_qs(urlsplit(page.url).query)["run_ids"] == [ids[0], ids[1], ids[3]]
    expect(page.get_by_role("heading", level=1)).to_contain_text("3 runs")
    best_loss = page.locator("table.summary td.best")
    expect(best_loss).to_have_count(2)  # the best loss (trial-0) and the best accuracy (trial-3)

    for chart in ("#chart-0", "#chart-1"):  # accuracy, loss: drawn once scrolled near
        page.locator(chart).scroll_into_view_if_needed()
        expect(page.locator(f"{chart} .main-svg").first).to_be_visible()
    # accuracy was logged once per run: a bar per run, not three dots on a step axis.
    expect(page.locator("#chart-0 .barlayer .point")).to_have_count(3)
    expect(page.locator("#chart-1 .scatterlayer .trace")).to_have_count(3)
    expect(page.locator("#chart-1 .legendtext")).to_have_text(["trial-0", "trial-1", "trial-3"])
    # The x-axis switch redraws the history against time since each run started.
    expect(page.locator("#chart-1 .xtitle")).to_have_text("step")
    page.get_by_label("relative time").check()
    expect(page.locator("#chart-1 .xtitle")).to_contain_text("time since the run started")
    # Wall-clock time is drawn in the page's time zone (every time on the page uses it) and says which.
    zone = page.locator("html").get_attribute("data-time-zone")
    assert zone
    page.get_by_label("time", exact=True).check()
    expect(page.locator("#chart-1 .xtitle")).to_have_text(f"time ({zone})")
    page.get_by_label("step", exact=True).check()
    expect(page.locator("#chart-1 .xtitle")).to_have_text("step")
    page.locator("#parcoords").scroll_into_view_if_needed()
    expect(page.locator("#parcoords .main-svg").first).to_be_visible()
    expect(page.locator("#scatter .main-svg").first).to_be_visible()

    # "Only differences" hides the params every run shares (batch).
    batch_row = page.locator("#params-table tr", has_text="batch")
    expect(batch_row).to_be_visible()
    page.get_by_label("only differences").check()
    expect(batch_row).to_be_hidden()

"""The layout at common laptop widths (1366 and 1280 px) in a real browser: the header is
one bar across the page with the approvals count beside "Models" (not a pill wrapping under
it), and a runs table with many columns scrolls inside its own box instead of clipping its
last column or widening the page."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from apps.registry.models import PromotionRequest, RegisteredModel
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [1366, 1280]


def sign_in(page: Page, live_server: LiveServer, user: User) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


def page_overflows(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth"))


@pytest.mark.parametrize("width", WIDTHS)
def test_the_header_is_one_bar_with_the_approvals_count_beside_models(
    page: Page, live_server: LiveServer, ada: User, lin: User, project: Project, width: int
) -> None:
    model = RegisteredModel.objects.create(name="digits", project=project)
    PromotionRequest.objects.create(
        project=project,
        model=model,
        version=1,
        alias="champion",
        justification="better",
        requested_by=ada,
        expires_at=timezone.now() + timedelta(days=7),
    )
    page.set_viewport_size({"width": width, "height": 800})
    sign_in(page, live_server, lin)
    bar = page.locator("header.topbar").bounding_box()
    models = page.locator(".nav a", has_text="Models").bounding_box()
    badge = page.locator(".nav a.badge").bounding_box()
    items = [page.locator(".nav > li").nth(i).bounding_box() for i in range(page.locator(".nav > li").count())]
    assert bar and models and badge and all(items)
    assert bar["width"] >= width - 1, "the header spans the page"
    assert bar["height"] <= 60, f"one line of navigation, not {bar['height']} px"
    assert len({round(item["y"]) for item in items if item}) == 1, "every section on the same line"
    middle = models["y"] + models["height"] / 2
    assert badge["y"] < middle < badge["y"] + badge["height"], "the count sits beside Models, not under it"
    assert badge["x"] >= models["x"] + models["width"] - 8
    assert not page_overflows(page)


@pytest.mark.mlflow
def test_a_wide_runs_table_scrolls_in_its_box_without_clipping_a_column(
    page: Page, live_server: LiveServer, vic: User, project: Project, mlflow_up: str
) -> None:
    client = MlflowClient(tracking_uri=mlflow_up)
    experiment = client.create_experiment(f"tests/e2e-layout/{uuid.uuid4().hex[:8]}")
    for i in range(3):
        run_id = client.create_run(experiment, run_name=f"a-rather-long-run-name-{i}").info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(f"validation_metric_number_{k}", 0.5 + k / 100, now, 0) for k in range(8)],
            params=[Param(f"hyperparameter_{k}", f"value-{k}-{i}") for k in range(8)],
        )
        client.set_terminated(run_id)
    Project.objects.filter(pk=project.pk).update(
        mlflow_experiment_id=str(experiment), mlflow_state=ExperimentState.LINKED
    )
    sign_in(page, live_server, vic)
    params = "&".join(f"params=hyperparameter_{k}" for k in range(8))
    metrics = "&".join(f"metrics=validation_metric_number_{k}" for k in range(8))
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{live_server.url}/runs/demo/demo/?{params}&{metrics}")
        box = page.locator(".runs-table")
        expect(box.locator("tbody tr")).to_have_count(3)
        assert not page_overflows(page), f"the page itself scrolls sideways at {width} px"
        assert box.evaluate("el => el.scrollWidth > el.clientWidth"), "the table is wider than its box: it scrolls"
        box.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
        last = box.locator("thead th").last.bounding_box()
        shown = box.bounding_box()
        assert last and shown
        assert last["x"] + last["width"] <= shown["x"] + shown["width"] + 1, f"the last column is clipped at {width} px"
        assert last["x"] >= shown["x"] - 1

"""Promotions in a real browser, end to end: the demo member asks for `champion` for a new
version, the demo lead approves it from the inbox, and the model page shows the alias and
its history — while MLflow's own client reads `champion` → that version.

Everything on the way is real: the MLflow server (`mlflow_up`) with a model registered by
the plain MLflow client, a Celery worker taking the apply task from the configured
broker, htmx on the inbox and on the request page's status."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.projects.models import Project
from apps.registry.models import PromotionRequest, Status
from apps.registry.tasks import reconcile_aliases
from portal.celery import app
from tests.conftest import PASSWORD
from tests.registry.conftest import Registered

pytestmark = [
    pytest.mark.browser,
    pytest.mark.celery,
    pytest.mark.mlflow,
    pytest.mark.django_db(transaction=True),
]

APPLY_SECONDS = 60
# The build machines are often busy (MLflow, a worker and a browser share few CPUs): each
# step gets longer than the suite's default before it counts as a failure.
STEP_MS = 30_000


@pytest.fixture
def worker(transactional_db: None) -> Iterator[Any]:
    """A Celery worker in this process (threads), on the configured broker."""
    app.control.purge()  # messages left over from other tests must not run against this database
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20
    ) as running:
        yield running


def sign_in(page: Page, live_server: LiveServer, user: User) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {user.username}")


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/"))


def test_member_asks_for_champion_lead_approves_from_the_inbox_and_mlflow_follows(
    page: Page,
    live_server: LiveServer,
    ada: User,
    lin: User,
    project: Project,
    mlflow_up: str,
    worker: Any,
) -> None:
    page.set_default_timeout(STEP_MS)
    expect.set_options(timeout=STEP_MS)
    registered = Registered(mlflow_up)
    name = registered.model(
        "demo/demo", [{"accuracy": 0.91, "f1": 0.90}, {"accuracy": 0.96, "f1": 0.95}], prefix="digits"
    )
    registered.client.set_registered_model_alias(name, "champion", "1")  # today's champion
    reconcile_aliases()  # Plinth's history starts from what MLflow says

    # ada: models → the project → the model → "Request promotion" of version 2
    sign_in(page, live_server, ada)
    page.goto(f"{live_server.url}/models/")
    page.get_by_role("link", name="demo/demo").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Models")
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    page.locator('tr[data-version="2"]').get_by_role("link", name="Request promotion").click()
    expect(page.get_by_label("Version")).to_have_value("2")
    expect(page.get_by_label("Alias")).to_have_value("champion")
    page.get_by_label("Justification").fill("Version 2 is more accurate on the holdout set.")
    page.get_by_role("button", name="Send request").click()

    expect(page).to_have_url(re.compile(rf"^{re.escape(live_server.url)}/models/requests/\d+/$"))
    request = PromotionRequest.objects.get()
    expect(page.locator("#status [data-status]")).to_have_text("Pending")
    expect(page.locator('tr[data-metric="accuracy"]')).to_contain_text("0.9600")
    expect(page.locator('tr[data-metric="accuracy"]')).to_contain_text("0.9100")
    expect(page.locator("#evidence-chart .main-svg").first).to_be_visible()  # the Plotly chart drew
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)  # never one's own request
    sign_out(page)

    # lin: the inbox → approve with a comment, without leaving the page (htmx)
    sign_in(page, live_server, lin)
    page.goto(f"{live_server.url}/models/approvals/")
    row = page.locator(f'tr[data-request="{request.pk}"]')
    expect(row).to_contain_text("ada")
    page.evaluate("() => { window.__plinthSamePage = true; }")
    row.get_by_label(f"Comment on #{request.pk}").fill("Looks good")
    row.get_by_role("button", name="Approve").click()
    expect(page.locator("#messages")).to_contain_text(f"Request #{request.pk} approved")
    expect(page.locator(f'tr[data-request="{request.pk}"]')).to_have_count(0)
    assert page.evaluate("() => window.__plinthSamePage === true"), "the inbox reloaded instead of swapping"

    # The worker applies it; the request page's status follows without a reload.
    page.goto(f"{live_server.url}/models/requests/{request.pk}/")
    try:
        expect(page.locator("#status [data-status]")).to_have_text("Applied", timeout=APPLY_SECONDS * 1000)
    except AssertionError:
        request.refresh_from_db()
        raise AssertionError(f"request #{request.pk} is {request.status}: {request.status_reason!r}") from None
    assert registered.alias(name, "champion") == 2  # MLflow's own client agrees

    # The model page: the alias now, who asked, who approved, and the history.
    page.get_by_role("link", name="Model", exact=True).click()
    card = page.locator('[data-alias="champion"]')
    expect(card).to_contain_text("version 2")
    expect(card).to_contain_text("ada")
    expect(card).to_contain_text("lin")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text(f"#{request.pk}")
    expect(history.nth(0)).to_contain_text("v1")  # before
    expect(history.nth(0)).to_contain_text("now")
    expect(history.nth(1)).to_contain_text("Found in MLflow")
    assert PromotionRequest.objects.get(pk=request.pk).status == Status.APPLIED

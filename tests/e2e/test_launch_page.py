"""The launch pages in a real browser, end to end: the demo member launches `sklearn-digits`
from the page and watches it succeed without reloading.

Everything on the way is real: the MLflow server (`mlflow_up`), a Celery worker taking the
submit task from the configured broker, the local backend running the training script as
a process, and a reconciler (what beat runs in production: `sync_launches` every second
here) that notices the end. Only the htmx polling of the detail page shows it to the user.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connections
from playwright.sync_api import Page, Request, Response, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status
from apps.launches.tasks import sync_launches
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import gateway
from portal.celery import app
from tests.conftest import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.celery,
    pytest.mark.mlflow,
    pytest.mark.django_db(transaction=True),
]

RUN_SECONDS = 90  # the training itself takes a few seconds; importing mlflow and sklearn, more
POLL_SECONDS = 3  # hx-trigger="every 3s" on the detail page's status section (the log comes with it)


@pytest.fixture
def worker(transactional_db: None) -> Iterator[Any]:
    """A Celery worker in this process (threads), on the configured broker."""
    app.control.purge()  # messages left over from other tests must not run against this database
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20
    ) as running:
        yield running


@pytest.fixture
def reconciler(transactional_db: None) -> Iterator[list[str]]:
    """What beat does in production: `sync_launches` every second, in a thread. Yields the
    errors it met (a failing pass is retried on the next one, as with beat)."""
    stop = threading.Event()
    errors: list[str] = []

    def loop() -> None:
        try:
            while not stop.wait(1.0):
                try:
                    sync_launches()
                except Exception as exc:  # reported by the test if the launch never ends
                    errors.append(repr(exc))
        finally:
            connections.close_all()

    thread = threading.Thread(target=loop, name="reconciler", daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(timeout=60)


@pytest.fixture
def digits(root: User, project: Project, settings: Any, tmp_path: Path, mlflow_up: str) -> Project:
    """The global sklearn-digits template and project demo/demo on the local backend, not yet
    linked to MLflow (the launch links it); launch folders under tmp_path."""
    settings.DATA_DIR = tmp_path
    launch_services.create_template(root, None, **SKLEARN_DIGITS)
    assert project.backend == "local" and project.mlflow_state != ExperimentState.LINKED
    return project


def sign_in(page: Page, live_server: LiveServer, user: User) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {user.username}")


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_member_launches_sklearn_digits_and_watches_it_succeed(
    page: Page,
    live_server: LiveServer,
    ada: User,
    digits: Project,
    mlflow_up: str,
    worker: Any,
    reconciler: list[str],
) -> None:
    polls: list[str] = []  # the fragment asked for (the element swapped), one per htmx poll
    answers: list[tuple[str, int]] = []

    def count_poll(request: Request) -> None:
        if request.headers.get("hx-request") and re.match(r"https?://[^/]+/launches/\d+/$", request.url):
            polls.append(request.headers.get("hx-target", ""))

    def note_answer(response: Response) -> None:
        request = response.request
        if request.headers.get("hx-request") and re.match(r"https?://[^/]+/launches/\d+/$", request.url):
            answers.append((request.headers.get("hx-target", ""), response.status))

    page.on("request", count_poll)
    page.on("response", note_answer)
    sign_in(page, live_server, ada)

    page.goto(f"{live_server.url}/launches/")
    page.get_by_role("link", name="New launch").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New launch: choose a template")
    page.get_by_role("link", name="Launch sklearn-digits").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Launch scikit-learn digits classifier")
    expect(page.get_by_label("Project")).to_have_value(str(digits.pk))
    page.get_by_label("epochs", exact=True).fill("20")
    page.get_by_role("button", name="Launch", exact=True).click()

    expect(page).to_have_url(re.compile(rf"^{re.escape(live_server.url)}/launches/\d+/$"))
    launch = Launch.objects.get()
    assert (launch.created_by_id, launch.parameters["epochs"]) == (ada.pk, 20)
    expect(page.get_by_role("heading", level=1)).to_contain_text(launch.job_name)
    assert page.evaluate("() => typeof window.htmx") == "object", "htmx did not load"
    # A flag on the window survives htmx swaps but not a page load: proof nothing reloaded.
    page.evaluate("() => { window.__plinthSamePage = true; }")

    status = page.locator("#status")
    badge = status.locator("[data-status]")
    try:
        expect(badge).to_have_text("Succeeded", timeout=RUN_SECONDS * 1000)
    except AssertionError:
        launch.refresh_from_db()
        raise AssertionError(
            f"{launch.job_name} is {launch.status} ({launch.status_reason!r}) after {RUN_SECONDS} s; "
            f"reconciler errors: {reconciler[-3:]}"
        ) from None
    logs = page.locator("#logs")
    expect(logs.locator("pre.log")).to_contain_text("accuracy")
    expect(logs.locator("pre.log")).to_contain_text("epoch  20/20")
    launch.refresh_from_db()
    run_url = f"{mlflow_up}/#/experiments/{launch.mlflow_experiment_id}/runs/{launch.mlflow_run_id}"
    expect(status.get_by_role("link", name=re.compile(r"^MLflow run"))).to_have_attribute("href", run_url)
    assert page.evaluate("() => window.__plinthSamePage === true"), "the page reloaded: htmx did not poll"
    assert polls.count("status") >= 1, "the status was never polled"

    # The end stops the polling: the last fragment comes without hx-trigger (and with 286),
    # and the status poll was the only one (the log and the actions come with it).
    expect(status).not_to_have_attribute("hx-trigger", re.compile(".*"))
    expect(logs).not_to_have_attribute("hx-trigger", re.compile(".*"))
    seen = len(polls)
    page.wait_for_timeout(2 * POLL_SECONDS * 1000 + 1000)
    assert polls[seen:] == [], f"still polling after the launch ended: {polls[seen:]}"
    assert set(polls) == {"status"}, polls
    last = dict(answers)  # the last answer to each fragment
    assert last == {"status": 286}, f"the final fragment should say stop (286): {answers}"

    assert launch.status == Status.SUCCEEDED and launch.exit_code == 0
    assert wait_for(lambda: Launch.objects.filter(pk=launch.pk, mlflow_closed=True).exists()), "MLflow run not closed"
    run = gateway().get_run(launch.mlflow_run_id)
    assert run["info"]["status"] == "FINISHED"
    assert "accuracy" in {metric["key"] for metric in run["data"]["metrics"]}

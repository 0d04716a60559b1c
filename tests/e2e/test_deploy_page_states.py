"""The deployment page in a real browser through its states, without a reload: created (no
drift, "revision 1 (v1) is starting"), serving (the poll brings the model's logged input
example into the curl line and "Try it"), a canary (both revisions charted, "Roll back"
offered), and deleted (the last poll removes the actions and the key form). A viewer's
"Call it" box, and the global list. With PLINTH_SHOTS=<folder>, each state is saved there
as a PNG to look at.

The serving backend is the FakeServing, MLflow's registry the FakeRegistry; the rollout is
the real one, run pass by pass here as the reconcile task would."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.deployments import examples, rollout, services, tasks
from apps.deployments.models import Deployment, RevisionStatus
from apps.projects.models import ExperimentState, Project
from apps.registry.models import AliasHistory, RegisteredModel
from tests.conftest import PASSWORD
from tests.deployments.fakes import FakeServing
from tests.deployments.fakes import install as install_serving
from tests.registry.fakes import FakeRegistry
from tests.registry.fakes import install as install_registry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEP_MS = 40_000  # polls come every 3 s (rolling out) or 15 s (serving)
LOGGED = {"dataframe_split": {"columns": ["pixel_0", "pixel_1"], "data": [[0.0, 1.0]]}}


def shot(tab: Page, name: str) -> None:
    folder = os.environ.get("PLINTH_SHOTS", "")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def sign_in(tab: Page, live_server: LiveServer, who: str) -> None:
    tab.goto(f"{live_server.url}/login/")
    tab.get_by_label("Username").fill(who)
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(lambda url: "/login/" not in url)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, project: Project) -> tuple[FakeRegistry, FakeServing]:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    registry = install_registry(monkeypatch)
    registry.add_model("digits", "demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.95}])
    registry.models["digits"]["aliases"]["champion"] = 1
    model = RegisteredModel.objects.create(name="digits", project=project)
    AliasHistory.objects.create(model=model, alias="champion", version=1)
    monkeypatch.setattr(tasks.reconcile_deployment, "delay", lambda *args, **kwargs: None)
    monkeypatch.setattr(examples, "_logged_example", lambda name, version: json.dumps(LOGGED, indent=2).encode())
    return registry, install_serving(monkeypatch)


def settle(deployment: Deployment, passes: int = 6) -> None:
    for _ in range(passes):
        rollout.reconcile(deployment.pk)


def test_the_deployment_page_follows_a_rollout_and_a_delete_without_reload(
    page: Page,
    live_server: LiveServer,
    ada: User,
    vic: User,
    project: Project,
    world: tuple[FakeRegistry, FakeServing],
) -> None:
    registry, serving = world
    page.set_default_timeout(STEP_MS)
    expect.set_options(timeout=STEP_MS)  # the page fixture sets it back for the next test
    page.set_viewport_size({"width": 1400, "height": 1000})
    sign_in(page, live_server, "ada")
    deployment = services.create_deployment(ada, project, name="digits-api", model="digits", canary_minutes=60)
    url = f"{live_server.url}/deployments/{deployment.pk}/"

    page.goto(url)
    expect(page.locator("[data-no-revision]")).to_contain_text("revision 1 (v1) is starting")
    expect(page.locator("[data-drift]")).to_have_count(0)
    shot(page, "01-created")

    rollout.reconcile(deployment.pk)  # revision 1 starts
    expect(page.locator('#live tr[data-revision="1"]')).to_be_visible()
    expect(page.locator("[data-drift]")).to_have_count(0)
    shot(page, "02-starting")

    settle(deployment)
    assert deployment.revisions.filter(status=RevisionStatus.SERVING, traffic=100, version=1).exists()
    expect(page.locator("#call [data-curl]")).to_contain_text('"columns":["pixel_0","pixel_1"]')  # no reload
    expect(page.locator("#try-body")).to_have_value(re.compile("pixel_0"))
    expect(page.locator("#actions")).not_to_contain_text("Roll back")
    for _ in range(3):
        serving.feed(deployment.revisions.get(number=1), 200, 12.0, count=5)
    page.reload()
    shot(page, "03-serving")

    registry.set_alias("digits", "champion", 2)
    AliasHistory.objects.filter(alias="champion", valid_to__isnull=True).update(valid_to=deployment.created_at)
    AliasHistory.objects.create(model=RegisteredModel.objects.get(name="digits"), alias="champion", version=2)
    settle(deployment, 4)
    canary = deployment.revisions.get(number=2)
    assert canary.is_canary
    serving.feed(canary, 200, 25.0, count=2)
    serving.feed(canary, 500, 40.0, count=1)
    expect(page.locator("#actions [data-rollback-to]")).to_be_visible()  # brought by the poll
    expect(page.locator("[data-drift]")).to_have_count(0)
    page.reload()
    shot(page, "04-canary")

    page.goto(f"{live_server.url}/deployments/")
    expect(page.locator('[data-deployment="digits-api"]')).to_be_visible()
    shot(page, "05-global-list")

    page.goto(url)
    Deployment.objects.filter(pk=deployment.pk).delete()
    expect(page.locator("[data-gone]")).to_be_visible()
    expect(page.locator("#actions")).to_be_empty()
    expect(page.get_by_role("button", name="Make a key")).to_have_count(0)
    expect(page.get_by_role("button", name="Send")).to_have_count(0)
    shot(page, "06-gone-no-reload")


def test_a_viewer_is_told_who_may_call_it(
    page: Page,
    live_server: LiveServer,
    ada: User,
    vic: User,
    project: Project,
    world: tuple[FakeRegistry, FakeServing],
) -> None:
    page.set_default_timeout(STEP_MS)
    expect.set_options(timeout=STEP_MS)  # the page fixture sets it back for the next test
    page.set_viewport_size({"width": 1400, "height": 1000})
    deployment = services.create_deployment(ada, project, name="digits-api", model="digits")
    settle(deployment)
    sign_in(page, live_server, "vic")
    page.goto(f"{live_server.url}/deployments/{deployment.pk}/")
    expect(page.locator("#call")).to_contain_text("Members of the team")
    expect(page.locator("#call [data-curl]")).to_have_count(0)
    shot(page, "07-viewer")

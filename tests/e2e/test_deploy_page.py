"""Deploying from the model page in a real browser: the demo member presses "Deploy" on the
registered model, saves the form, the rollout brings version 1 up, and "Try it" sends the
input example and shows the model's answer in place (htmx), with the version that served.

The serving backend is the FakeServing (no model server process: that is what
tests/deployments/test_rollout_e2e.py runs) and MLflow's registry the FakeRegistry; the
rollout is the real one, run here as the reconcile task would run it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.deployments import rollout, tasks
from apps.deployments.models import Deployment, RevisionStatus
from apps.projects.models import ExperimentState, Project
from apps.registry.models import RegisteredModel
from tests.conftest import PASSWORD
from tests.deployments.fakes import FakeServing
from tests.deployments.fakes import install as install_serving
from tests.registry.fakes import install as install_registry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEP_MS = 30_000  # a busy build machine: the live server and Chromium share two cores
EXAMPLE = '{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}'


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch, project: Project) -> FakeServing:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    registry = install_registry(monkeypatch)
    registry.add_model("digits", "demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.95}])
    registry.models["digits"]["aliases"]["champion"] = 1
    RegisteredModel.objects.create(name="digits", project=project)
    # The reconcile task is run below, pass by pass, not from a broker.
    monkeypatch.setattr(tasks.reconcile_deployment, "delay", lambda *args, **kwargs: None)
    return install_serving(monkeypatch)


def test_a_member_deploys_from_the_model_page_and_tries_it(
    page: Page, live_server: LiveServer, ada: User, serving: FakeServing
) -> None:
    page.set_default_timeout(STEP_MS)
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)

    page.goto(f"{live_server.url}/models/registered/digits/")
    page.locator("a[data-deploy]").click()
    expect(page.get_by_label("Name")).to_have_value("digits")
    page.get_by_label("Name").fill("digits-api")
    page.get_by_label("Input example (JSON)").fill(EXAMPLE)
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(r"/deployments/\d+/$"))
    deployment = Deployment.objects.get(name="digits-api")
    assert deployment.created_by == ada and deployment.alias == "champion"

    for _ in range(6):  # start → pre-flight → 100 %: one step per pass
        rollout.reconcile(deployment.pk)
        if deployment.revisions.filter(status=RevisionStatus.SERVING, traffic=100).exists():
            break
    assert deployment.revisions.filter(status=RevisionStatus.SERVING, traffic=100, version=1).exists()

    page.reload()
    expect(page.locator("#live [data-status]").first).to_have_attribute("data-status", "serving")
    page.get_by_role("button", name="Send").click()  # empty body: the deployment's input example
    answer = page.locator("#try [data-answer-status]")
    expect(answer).to_have_attribute("data-answer-status", "200")
    expect(page.locator("#try")).to_contain_text("from version 1")
    expect(page.locator("#try pre")).to_contain_text('"predictions"')
    assert page.url.endswith(f"/deployments/{deployment.pk}/")  # swapped in place, no navigation

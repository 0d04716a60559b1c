"""Errors are pages: 400/403/404/409/503 render the site's layout, the reason the code gave
and a way back; an htmx request gets the reason as a message for the page's `#messages`
region (status kept); an expected refusal is logged as one line without a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.core.errors import Unavailable
from apps.launches import services as launch_services
from apps.launches.models import Launch, Status, Template
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import client_for

HTMX = {"HX-Request": "true"}


def a_launch(project: Project, user: User, status: str) -> Launch:
    template = Template.objects.create(slug="echo", image="python:3.12", command=["python", "-V"], backends=["local"])
    return Launch.objects.create(
        project=project,
        template=template,
        created_by=user,
        status=status,
        backend="local",
        parameters={},
        resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
        mlflow_run_id="run-1",
        mlflow_experiment_id="1",
    )


def assert_error_page(response: Any, status: int, reason: str, back: str | None = None) -> None:
    page = response.content.decode()
    assert response.status_code == status, page[:500]
    assert 'class="topbar"' in page and 'aria-label="Main"' in page, "no site header"
    assert reason in page, f"the reason {reason!r} is missing"
    assert "Go back" in page
    if back is not None:
        assert f'href="{back}"' in page, f"no way back to {back}"


def assert_htmx_message(response: Any, status: int, reason: str) -> None:
    fragment = response.content.decode()
    assert response.status_code == status, fragment[:500]
    assert response["HX-Retarget"] == "#messages" and response["HX-Reswap"] == "innerHTML"
    assert reason in fragment and 'role="alert"' in fragment
    assert "<html" not in fragment and 'class="topbar"' not in fragment, "a whole page for a fragment"


# --- 403 ---------------------------------------------------------------------------------
def test_a_page_for_platform_admins_is_a_403_page_with_the_reason(ada: User) -> None:
    response = client_for(ada).get("/teams/new/", HTTP_REFERER="http://testserver/teams/")
    assert_error_page(response, 403, "This page is for platform admins.", back="http://testserver/teams/")


def test_a_403_from_a_service_shows_the_services_sentence(project: Project, ada: User, lin: User) -> None:
    launch = a_launch(project, lin, Status.RUNNING)
    url = f"/launches/{launch.pk}/cancel/"
    reason = "Only the person who launched it or a lead of the team can cancel it."

    assert_error_page(client_for(ada).post(url), 403, reason, back=f"/launches/{launch.pk}/")
    assert_htmx_message(client_for(ada).post(url, headers=HTMX), 403, reason)
    assert Launch.objects.get(pk=launch.pk).status == Status.RUNNING


# --- 404 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_launch_is_a_404_page_with_the_reason_even_with_debug_on(
    ada: User, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    response = client_for(ada).get("/launches/987654/")
    assert_error_page(response, 404, "No such launch.", back="/launches/")
    assert "Using the URLconf" not in response.content.decode()  # not Django's technical page


@pytest.mark.parametrize("debug", [False, True])
def test_a_bad_run_id_in_compare_is_a_404_page_with_the_reason(
    project: Project, ada: User, settings: Any, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    settings.DEBUG = debug
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1")
    monkeypatch.setattr(MlflowGateway, "search_runs", lambda self, *a, **k: ([], ""))
    missing = "0123456789abcdef0123456789abcdef"
    response = client_for(ada).get(f"/runs/compare/?run_ids={missing}")
    assert_error_page(response, 404, f"No such run: {missing}.")


def test_an_invisible_object_is_a_404_for_htmx_too(project: Project, omar: User) -> None:
    response = client_for(omar).get(f"/projects/{project.team.slug}/{project.slug}/", headers=HTMX)
    assert_htmx_message(response, 404, "No such project.")


def test_a_path_that_matches_nothing_is_the_404_page_and_json_under_the_api(ada: User) -> None:
    response = client_for(ada).get("/launches/not-a-number/")
    assert_error_page(response, 404, "There is nothing here")
    assert "launches/&lt;int:pk&gt;" not in response.content.decode()  # no URL patterns shown
    api = client_for(ada).get("/api/v1/nothing-here/")
    assert api.status_code == 404 and api.json() == {"detail": "Not found."}


# --- 409 ---------------------------------------------------------------------------------
def test_cancelling_an_ended_launch_is_a_409_page_with_the_reason(project: Project, ada: User) -> None:
    launch = a_launch(project, ada, Status.SUCCEEDED)
    url = f"/launches/{launch.pk}/cancel/"
    reason = f"{launch.job_name} already ended (succeeded)."

    assert_error_page(client_for(ada).post(url), 409, reason, back=f"/launches/{launch.pk}/")
    assert_htmx_message(client_for(ada).post(url, headers=HTMX), 409, reason)


# --- 400, 503 ----------------------------------------------------------------------------
def test_an_invalid_price_is_a_400_page_with_the_reason(root: User) -> None:
    response = client_for(root).post("/gpus/prices/", {"model": "", "price": "cheap"})
    assert_error_page(response, 400, "and a price (a number, or empty to remove it)", back="/gpus/usage/")


def test_a_dependency_down_is_a_503_page_with_the_reason(
    project: Project, ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = a_launch(project, ada, Status.RUNNING)

    def down(*args: Any, **kwargs: Any) -> Launch:
        raise Unavailable("The cluster is unreachable; try again in a moment.")

    monkeypatch.setattr(launch_services, "cancel_launch", down)
    url = f"/launches/{launch.pk}/cancel/"
    assert_error_page(client_for(ada).post(url), 503, "The cluster is unreachable")
    assert_htmx_message(client_for(ada).post(url, headers=HTMX), 503, "The cluster is unreachable")


def test_anonymous_callers_are_still_sent_to_sign_in(project: Project) -> None:
    response = Client().get("/teams/new/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- logging -----------------------------------------------------------------------------
def test_an_expected_refusal_logs_one_line_without_a_traceback(
    project: Project, ada: User, lin: User, caplog: pytest.LogCaptureFixture
) -> None:
    launch = a_launch(project, lin, Status.RUNNING)
    caplog.set_level(logging.INFO)

    client_for(ada).post(f"/launches/{launch.pk}/cancel/")
    client_for(ada).get("/teams/new/")

    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 2, [r.getMessage() for r in refusals]
    cancel, page = refusals
    assert cancel.levelno == logging.WARNING and "Only the person who launched it" in cancel.getMessage()
    assert page.levelno == logging.WARNING and "This page is for platform admins." in page.getMessage()
    assert all(r.exc_info is None for r in refusals), "an expected refusal logged a traceback"


def test_a_dependency_down_is_logged_as_one_error_line_without_a_traceback(
    project: Project, ada: User, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    launch = a_launch(project, ada, Status.RUNNING)

    def down(*args: Any, **kwargs: Any) -> Launch:
        raise Unavailable("The cluster is unreachable.")

    monkeypatch.setattr(launch_services, "cancel_launch", down)
    client_for(ada).post(f"/launches/{launch.pk}/cancel/")

    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # Expected (MLflow or the cluster unreachable): the reason in one line, no traceback.
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR and errors[0].exc_info is None
    assert "The cluster is unreachable." in errors[0].getMessage()


def test_a_form_posted_without_its_csrf_token_is_the_403_page_saying_what_to_do(ada: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada)
    response = client.post("/account/", {"name": "laptop"})
    assert_error_page(response, 403, "reload the page and try again")


def test_a_request_django_refuses_is_the_400_page(ada: User, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 2
    response = client_for(ada).post("/account/", {f"field{i}": "x" for i in range(5)})
    assert_error_page(response, 400, "The request could not be understood.")


def test_a_host_that_is_not_allowed_is_a_plain_400_not_a_500(ada: User) -> None:
    response = Client(HTTP_HOST="elsewhere.example").get("/teams/")
    assert response.status_code == 400


def test_a_form_address_opened_in_the_browser_is_the_405_page(ada: User, project: Project) -> None:
    response = client_for(ada).get(f"/projects/{project.team.slug}/{project.slug}/edit/")
    assert_error_page(response, 405, "takes a form submission")
    assert "POST" in response["Allow"]


def test_a_poll_after_the_session_ended_reloads_into_the_sign_in_page(project: Project) -> None:
    response = Client().get("/models/approvals/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="nav-approvals")
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/login/")

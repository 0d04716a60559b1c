"""The deployment page through a rollout as a user walks it: no false drift while a
version starts, what the poll refreshes besides the live region (the actions, the curl line
and "Try it" once the example is known, everything gone after a delete), the charts (empty
state, the 5xx axis, a single minute, the window, stable trace names), "Roll back" only when
there is somewhere to go, what viewers are told, deprecated environments, the global list
and the free name the create form proposes."""

from __future__ import annotations

import html
import json
import shlex
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.deployments.charts import metric_figures
from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus
from apps.deployments.serializers import drift_of
from apps.deployments.serving.base import MetricsSeries
from apps.environments.models import Environment, EnvironmentState
from apps.projects.models import Project
from apps.registry.models import AliasHistory, RegisteredModel
from tests.conftest import api_for, client_for
from tests.deployments.conftest import add_revision
from tests.deployments.fakes import FakeServing

pytestmark = pytest.mark.django_db

HTMX_POLL = {"HX-Request": "true", "HX-Target": "live"}


def point_alias(deployment: Deployment, version: int) -> None:
    model = RegisteredModel.objects.get(name=deployment.model_name)
    AliasHistory.objects.filter(model=model, alias=deployment.alias, valid_to__isnull=True).update(
        valid_to=timezone.now()
    )
    AliasHistory.objects.create(model=model, alias=deployment.alias, version=version)


@pytest.fixture
def serving(deployment: Deployment, fake_serving: FakeServing) -> Deployment:
    """digits-api serving version 1 (revision 1, 100 %), champion → v1."""
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100, serving_at=timezone.now())
    fake_serving.start(revision)
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.SERVING)
    point_alias(deployment, 1)
    deployment.refresh_from_db()
    return deployment


# -- 1. drift ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "reason", "drift"),
    [
        (RevisionStatus.STARTING, "", False),  # the rollout of v2 is starting: no drift
        (RevisionStatus.READY, "", False),  # pre-flight passed, canary next
        (RevisionStatus.SERVING, "", False),
        (RevisionStatus.FAILED, "pre-flight: 500", True),
        (RevisionStatus.RETIRED, "rolled back by ada", True),
        (RevisionStatus.RETIRED, "rollout abandoned: ada rolled back to version 1", True),
        (RevisionStatus.RETIRED, "superseded: environment changed", False),
    ],
)
def test_drift_only_when_the_alias_version_failed_or_was_rolled_back(
    serving: Deployment, status: str, reason: str, drift: bool
) -> None:
    add_revision(serving, 2, status, reason=reason)
    revisions = list(serving.revisions.all())
    assert drift_of(serving, revisions, 2) is drift


def test_a_new_deployment_shows_no_drift_and_says_its_first_revision_starts(ada: User, deployment: Deployment) -> None:
    point_alias(deployment, 1)
    client = client_for(ada)
    assert "data-drift" not in client.get(f"/deployments/{deployment.pk}/").content.decode()
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "revision 1 (v1) is starting" in page and "once the version" not in page
    add_revision(deployment, 1, RevisionStatus.STARTING)
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "data-drift" not in page
    assert api_for(ada).get(f"/api/v1/deployments/{deployment.pk}/").json()["drift"] is False


def test_a_failed_new_version_is_drift_on_the_page_and_in_the_api(ada: User, serving: Deployment) -> None:
    point_alias(serving, 2)
    add_revision(serving, 2, RevisionStatus.FAILED, reason="pre-flight failed")
    assert "data-drift" in client_for(ada).get(f"/deployments/{serving.pk}/").content.decode()
    assert api_for(ada).get(f"/api/v1/deployments/{serving.pk}/").json()["drift"] is True


# -- 2. what the poll refreshes ---------------------------------------------------------------
def test_the_poll_brings_the_example_once_known_and_the_curl_body_is_one_line(
    ada: User, deployment: Deployment, fake_serving: FakeServing, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.deployments import examples

    logged = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}
    monkeypatch.setattr(examples, "input_example", lambda d, v: json.dumps(logged, indent=2).encode())
    client = client_for(ada)
    page = client.get(f"/deployments/{deployment.pk}/")
    assert "[...]" in page.context["curl"]  # nothing serves yet: the placeholder
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100, serving_at=timezone.now())
    fake_serving.start(revision)
    poll = client.get(f"/deployments/{deployment.pk}/", headers=HTMX_POLL)
    body = poll.content.decode()
    assert 'id="call" aria-labelledby="call-h" hx-swap-oob="true"' in body
    assert 'id="try-body"' in body and "hx-swap-oob" in body.split('id="try-body"', 1)[1].split(">", 1)[0]
    words = shlex.split(html.unescape(body.split("data-curl>", 1)[1].split("</pre>", 1)[0]))
    sent = words[words.index("-d") + 1]
    assert json.loads(sent) == logged and "\n" not in sent and sent == json.dumps(logged, separators=(",", ":"))
    assert "example=known" in body  # the next poll says it has it: not sent again
    again = client.get(f"/deployments/{deployment.pk}/?example=known", headers=HTMX_POLL).content.decode()
    assert 'id="call"' not in again and 'id="try-body"' not in again
    assert 'id="actions" hx-swap-oob="true"' in again


def test_after_a_delete_the_last_poll_removes_the_actions_and_stops(ada: User, serving: Deployment) -> None:
    client = client_for(ada)
    Deployment.objects.filter(pk=serving.pk).delete()
    last = client.get(f"/deployments/{serving.pk}/", headers=HTMX_POLL)
    assert last.status_code == 286
    body = last.content.decode()
    assert "This deployment is gone." in body
    assert '<div class="actions" id="actions" hx-swap-oob="true"></div>' in body
    assert 'id="key-form" hx-swap-oob="true"' in body and 'id="try" hx-swap-oob="true"' in body
    assert "Roll back" not in body and "Delete" not in body and "Make a key" not in body


def test_a_poll_while_deleting_hides_the_actions(ada: User, serving: Deployment) -> None:
    Deployment.objects.filter(pk=serving.pk).update(status=DeploymentStatus.DELETING)
    body = client_for(ada).get(f"/deployments/{serving.pk}/", headers=HTMX_POLL).content.decode()
    actions = body.split('id="actions"', 1)[1].split("</div>", 1)[0]
    assert "Edit" not in actions and "Delete" not in actions


# -- 3. charts ---------------------------------------------------------------------------------
def test_no_requests_in_the_window_is_the_empty_state_not_empty_axes(
    ada: User, serving: Deployment, fake_serving: FakeServing
) -> None:
    page = client_for(ada).get(f"/deployments/{serving.pk}/")
    assert page.context["figures"] == []
    assert "data-no-requests" in page.content.decode()


def series(t: list[Any], requests: list[int], errors: list[int]) -> MetricsSeries:
    n = len(t)
    return MetricsSeries(
        revision_id=0, t=t, requests=requests, errors=errors, p50_ms=[10.0] * n, p95_ms=[20.0] * n, p99_ms=[30.0] * n
    )


def test_the_5xx_axis_is_a_fraction_shown_as_percent_from_zero_to_at_least_five(serving: Deployment) -> None:
    revision = serving.revisions.get()
    now = timezone.now().replace(second=0, microsecond=0)
    quiet = metric_figures([revision], {revision.pk: series([now], [4], [0])}, now - timedelta(minutes=5), now)
    (errors,) = [f for f in quiet if f.key == "errors"]
    axis = errors.figure["layout"]["yaxis"]
    assert axis["tickformat"] == ".0%" and axis["range"] == [0.0, 0.05] and axis["autorange"] is False
    bad = metric_figures([revision], {revision.pk: series([now], [4], [2])})
    (errors,) = [f for f in bad if f.key == "errors"]
    assert 0.5 <= errors.figure["layout"]["yaxis"]["range"][1] <= 1.0


def test_a_single_minute_is_drawn_with_markers_and_traces_keep_one_name(serving: Deployment) -> None:
    revision = serving.revisions.get()
    Revision.objects.filter(pk=revision.pk).update(status=RevisionStatus.RETIRED)
    revision.refresh_from_db()
    now = timezone.now().replace(second=0, microsecond=0)
    figures = metric_figures([revision], {revision.pk: series([now], [1], [0])})
    (latency,) = [f for f in figures if f.key == "latency"]
    assert all("markers" in trace["mode"] for trace in latency.figure["data"])
    assert [t["name"] for t in latency.figure["data"]] == ["r1 · v1 p50", "r1 · v1 p95", "r1 · v1 p99"]


def test_the_chart_window_adapts_to_a_young_deployment_and_can_be_chosen(
    ada: User, serving: Deployment, fake_serving: FakeServing
) -> None:
    Deployment.objects.filter(pk=serving.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    fake_serving.feed(serving.revisions.get(), 200, 10.0, count=3)
    client = client_for(ada)
    window = client.get(f"/deployments/{serving.pk}/").context["chart_window"]
    assert 11 <= (window["until"] - window["since"]).total_seconds() / 60 <= 13  # created - 2 min
    page = client.get(f"/deployments/{serving.pk}/").context
    (rate, *_) = page["figures"]
    assert rate.figure["layout"]["xaxis"]["range"] == [
        page["chart_window"]["since"].isoformat(),
        page["chart_window"]["until"].isoformat(),
    ]
    chosen = client.get(f"/deployments/{serving.pk}/?window=1440").context["chart_window"]
    assert chosen["value"] == "1440" and (chosen["until"] - chosen["since"]) == timedelta(minutes=1440)
    invalid = client.get(f"/deployments/{serving.pk}/?window=7").context["chart_window"]
    assert invalid["value"] == ""  # not one of the choices: adaptive
    poll = client.get(f"/deployments/{serving.pk}/?window=360", headers=HTMX_POLL).content.decode()
    assert "window=360" in poll.split('id="live"', 1)[1].split(">", 1)[0]  # the poll keeps it


# -- 6. roll back only when there is somewhere to go -------------------------------------------
def test_roll_back_is_offered_only_with_a_target(ada: User, serving: Deployment) -> None:
    client = client_for(ada)
    assert "Roll back" not in client.get(f"/deployments/{serving.pk}/").content.decode()
    add_revision(serving, 2, RevisionStatus.SERVING, traffic=10, is_canary=True)
    Revision.objects.filter(deployment=serving, number=1).update(traffic=90)
    page = client.get(f"/deployments/{serving.pk}/").content.decode()
    assert 'data-rollback-to="1"' in page
    done = client.post(f"/deployments/{serving.pk}/rollback/")
    assert done.status_code == 302
    assert "Roll back" not in client.get(done["Location"]).content.decode()  # back to r1 alone


# -- 7. viewers --------------------------------------------------------------------------------
def test_viewers_are_told_who_may_call_it_instead_of_a_curl_line(vic: User, serving: Deployment) -> None:
    page = client_for(vic).get(f"/deployments/{serving.pk}/").content.decode()
    assert "curl -X POST" not in page
    assert "Members of the team (with their API token) and holders of a serving key" in page


# -- 8. deprecated environment ----------------------------------------------------------------
def test_a_deprecated_environment_warns_and_names_its_replacement(ada: User, serving: Deployment) -> None:
    team = serving.project.team
    new = Environment.objects.create(team=team, name="sklearn-1.8", version=1, state=EnvironmentState.READY)
    old = Environment.objects.create(
        team=team,
        name="sklearn-1.6",
        version=1,
        state=EnvironmentState.DEPRECATED,
        replaced_by=new,
        message="1.6 has a CVE.",
    )
    Revision.objects.filter(deployment=serving).update(environment=old)
    page = client_for(ada).get(f"/deployments/{serving.pk}/").content.decode()
    warning = page.split(f'data-deprecated-environment="{old.label}"', 1)[1].split("</p>", 1)[0]
    assert f"use {new.label} instead" in warning and "1.6 has a CVE." in warning


# -- 4. the global list, the nav, the free name ------------------------------------------------
def test_the_global_list_shows_what_the_user_may_see_with_the_apis_filters(
    ada: User, omar: User, serving: Deployment
) -> None:
    page = client_for(ada).get("/deployments/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-deployment="digits-api"' in html and 'href="/deployments/"' in html  # the nav entry
    assert [r["deployment"].pk for r in page.context["rows"]] == [serving.pk]
    assert client_for(ada).get("/deployments/?status=failed").context["rows"] == []
    assert len(client_for(ada).get("/deployments/?model=digits&project=demo/demo").context["rows"]) == 1
    assert client_for(ada).get("/deployments/?status=nonsense").status_code == 400
    outsider = client_for(omar).get("/deployments/")
    assert outsider.status_code == 200 and outsider.context["rows"] == []
    assert "data-empty" in outsider.content.decode()


def test_the_create_form_proposes_a_free_name(ada: User, project: Project, deployment: Deployment) -> None:
    client = client_for(ada)
    url = "/deployments/projects/demo/demo/new/?model=digits"
    assert client.get(url).context["form"].initial["name"] == "digits"
    Deployment.objects.filter(pk=deployment.pk).update(name="digits")
    assert client.get(url).context["form"].initial["name"] == "digits-2"
    Deployment.objects.create(
        project=project, name="digits-2", model_name="digits", backend=deployment.backend, created_by=ada
    )
    assert client.get(url).context["form"].initial["name"] == "digits-3"

"""The deployment pages: who sees what (ada member, vic viewer, lin lead, root admin), the
forms' errors with the services' status codes, the live fragment's polling, "try it", the
serving keys shown once, and the backend being down shown as a message, never a 500."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.deployments.lookups import find_serving_key
from apps.deployments.models import Deployment, DeploymentStatus, RevisionStatus, ServingKey
from apps.projects.models import Project
from apps.registry.models import RegisteredModel
from tests.conftest import client_for
from tests.deployments.conftest import add_revision
from tests.deployments.fakes import FakeServing

pytestmark = pytest.mark.django_db

LIST = "/deployments/projects/demo/demo/"
NEW = "/deployments/projects/demo/demo/new/"
FORM = {
    "name": "digits-api",
    "model": "digits",
    "alias": "champion",
    "version": "",
    "canary_percent": 10,
    "canary_minutes": 5,
    "max_error_rate": 0.05,
    "max_p95_ms": 1000,
    "min_replicas": 1,
    "max_replicas": 1,
    "input_example": "",
}


@pytest.fixture
def serving(deployment: Deployment, fake_serving: FakeServing) -> Deployment:
    """digits-api serving version 1 (its model server up in the fake), 12 requests fed."""
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100, serving_at=timezone.now())
    fake_serving.start(revision)
    fake_serving.feed(revision, 200, 12.0, count=10)
    fake_serving.feed(revision, 500, 80.0, count=2)
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.SERVING)
    deployment.refresh_from_db()
    return deployment


@pytest.mark.parametrize("who", ["ada", "vic", "lin", "root"])
def test_everyone_of_the_team_sees_the_list_and_the_page(
    who: str, people: dict[str, User], serving: Deployment
) -> None:
    client = client_for(people[who])
    listing = client.get(LIST)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert 'data-deployment="digits-api"' in html
    assert "v1 100 %" in html
    (row,) = listing.context["rows"]
    assert (row["per_minute"], round(row["error_rate"], 3), row["p95_ms"]) == (12 / 5, 0.167, 80.0)
    page = client.get(f"/deployments/{serving.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/serve/demo/demo/digits-api/invocations" in html
    assert 'id="chart-latency"' in html and 'id="chart-rate"' in html
    assert (f'action="/deployments/{serving.pk}/delete/"' in html) == (who != "vic")
    assert "Roll back" not in html  # one revision: nothing to go back to
    assert ("curl -X POST" in html) == (who != "vic")  # viewers get 403 from the gateway
    assert (f'action="/deployments/{serving.pk}/try/"' in html) == (who != "vic")


def test_outsiders_get_404_and_viewers_403_on_changes(omar: User, vic: User, serving: Deployment) -> None:
    for url in (LIST, f"/deployments/{serving.pk}/", NEW):
        assert client_for(omar).get(url).status_code == 404, url
    assert client_for(vic).get(NEW).status_code == 403
    assert client_for(vic).get(f"/deployments/{serving.pk}/edit/").status_code == 403
    for action in ("rollback", "delete", "try", "keys"):
        assert client_for(vic).post(f"/deployments/{serving.pk}/{action}/").status_code == 403, action


def test_deploy_from_the_model_page(ada: User, project: Project, digits: RegisteredModel) -> None:
    form = client_for(ada).get(f"{NEW}?model=digits")
    assert form.status_code == 200
    assert form.context["form"].initial == {"model": "digits", "name": "digits"}
    made = client_for(ada).post(NEW, FORM)
    assert made.status_code == 302
    deployment = Deployment.objects.get()
    assert made["Location"] == f"/deployments/{deployment.pk}/"
    assert (deployment.alias, deployment.pinned_version, deployment.created_by) == ("champion", None, ada)


def test_the_create_form_shows_the_services_errors(ada: User, project: Project, digits: RegisteredModel) -> None:
    bad = client_for(ada).post(NEW, {**FORM, "name": "Not_DNS", "canary_percent": 300})
    assert bad.status_code == 400
    errors = bad.context["form"].errors
    assert "name" in errors
    assert not Deployment.objects.exists()
    both = client_for(ada).post(NEW, {**FORM, "canary_percent": 300})
    assert both.status_code == 400 and "canary_percent" in both.context["form"].errors
    example = client_for(ada).post(NEW, {**FORM, "input_example": "{not json"})
    assert example.status_code == 400 and "input_example" in example.context["form"].errors


def test_editing_pins_a_version_and_back(ada: User, deployment: Deployment, fake_registry: Any) -> None:
    url = f"/deployments/{deployment.pk}/edit/"
    assert client_for(ada).get(url).status_code == 200
    settings_form = {k: v for k, v in FORM.items() if k not in ("name", "model")}
    pinned = client_for(ada).post(url, {**settings_form, "version": 2})
    assert pinned.status_code == 302
    deployment.refresh_from_db()
    assert deployment.pinned_version == 2
    back = client_for(ada).post(url, {**settings_form, "alias": "champion", "version": ""})
    assert back.status_code == 302
    deployment.refresh_from_db()
    assert deployment.pinned_version is None
    assert AuditEvent.objects.filter(verb="deployment.update").count() == 2


def test_the_live_fragment_polls_fast_in_flight_slowly_serving_and_stops_when_failed(
    ada: User, deployment: Deployment, serving: Deployment
) -> None:
    url = f"/deployments/{deployment.pk}/"
    htmx = {"HX-Request": "true", "HX-Target": "live"}
    slow = client_for(ada).get(url, headers=htmx)
    assert slow.status_code == 200
    assert 'hx-trigger="every 15s"' in slow.content.decode()
    assert "Serving keys" not in slow.content.decode()  # the fragment alone
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.ROLLING_OUT)
    assert 'hx-trigger="every 3s"' in client_for(ada).get(url, headers=htmx).content.decode()
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.FAILED)
    last = client_for(ada).get(url, headers=htmx)
    assert last.status_code == 286
    assert "hx-trigger" not in last.content.decode()
    Deployment.objects.filter(pk=deployment.pk).delete()  # what the reconciler does once it is clean
    gone = client_for(ada).get(url, headers=htmx)
    assert gone.status_code == 286 and "gone" in gone.content.decode()
    assert client_for(ada).get(url).status_code == 404


def test_try_it_answers_once_after_a_redirect_and_in_place_for_htmx(
    ada: User, serving: Deployment, fake_serving: FakeServing
) -> None:
    url = f"/deployments/{serving.pk}/try/"
    body = '{"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}'
    client = client_for(ada)
    sent = client.post(url, {"body": body})
    assert sent.status_code == 302
    page = client.get(sent["Location"]).content.decode()
    assert 'data-answer-status="200"' in page and "from version 1" in page
    assert "data-tried" not in client.get(sent["Location"]).content.decode()  # shown once
    fragment = client.post(url, {"body": body}, headers={"HX-Request": "true", "HX-Target": "try"})
    assert fragment.status_code == 200
    assert 'data-answer-status="200"' in fragment.content.decode()
    bad = client.post(url, {"body": "{oops"}, headers={"HX-Request": "true", "HX-Target": "try"})
    assert 'data-answer-status="400"' in bad.content.decode()
    fake_serving.down = True
    down = client.post(url, {"body": body}, headers={"HX-Request": "true", "HX-Target": "try"})
    assert down.status_code == 200 and "unreachable" in down.content.decode()


def test_try_it_with_an_empty_body_sends_the_input_example(
    ada: User, serving: Deployment, fake_serving: FakeServing
) -> None:
    url = f"/deployments/{serving.pk}/try/"
    htmx = {"HX-Request": "true", "HX-Target": "try"}
    # No example on the deployment: the model's is read from MLflow, which is down here.
    down = client_for(ada).post(url, {"body": ""}, headers=htmx)
    assert "MLflow" in down.content.decode() and "unreachable" in down.content.decode()
    Deployment.objects.filter(pk=serving.pk).update(input_example={"inputs": [[1], [2], [3]]})
    sent = client_for(ada).post(url, {"body": ""}, headers=htmx)
    assert 'data-answer-status="200"' in sent.content.decode()
    shown = html.unescape(sent.content.decode().split('<pre class="log">', 1)[1].split("</pre>", 1)[0])
    assert json.loads(shown) == {"predictions": [1, 1, 1]}


def test_the_backend_down_is_a_message_on_the_pages(ada: User, serving: Deployment, fake_serving: FakeServing) -> None:
    fake_serving.down = True
    for url in (LIST, f"/deployments/{serving.pk}/"):
        page = client_for(ada).get(url)
        assert page.status_code == 200, url
        assert "unreachable" in page.content.decode(), url


def test_a_serving_key_is_shown_once_then_revoked(ada: User, vic: User, serving: Deployment) -> None:
    client = client_for(ada)
    made = client.post(f"/deployments/{serving.pk}/keys/", {"name": "batch-scorer"})
    assert made.status_code == 302
    page = client.get(f"/deployments/{serving.pk}/").content.decode()
    secret = page.split("data-new-key>", 1)[1].split("<", 1)[0]
    assert secret.startswith("plsk_")
    key = ServingKey.objects.get()
    assert find_serving_key(serving, secret) == key
    assert secret not in client.get(f"/deployments/{serving.pk}/").content.decode()
    assert secret not in client_for(vic).get(f"/deployments/{serving.pk}/").content.decode()
    again = client.post(f"/deployments/{serving.pk}/keys/", {"name": "batch-scorer"})
    assert again.status_code == 400
    revoked = client.post(f"/deployments/{serving.pk}/keys/{key.pk}/revoke/")
    assert revoked.status_code == 302
    assert find_serving_key(serving, secret) is None
    assert [e.verb for e in AuditEvent.objects.filter(verb__startswith="deployment.key").order_by("id")] == [
        "deployment.key_create",
        "deployment.key_revoke",
    ]


def test_delete_from_the_page(ada: User, serving: Deployment) -> None:
    gone = client_for(ada).post(f"/deployments/{serving.pk}/delete/")
    assert gone.status_code == 302 and gone["Location"] == LIST
    serving.refresh_from_db()
    assert serving.status == DeploymentStatus.DELETING
    page = client_for(ada).get(f"/deployments/{serving.pk}/").content.decode()
    assert "Make a key" not in page


def test_rollback_from_the_page_without_a_previous_revision_comes_back_with_the_reason(
    ada: User, serving: Deployment
) -> None:
    client = client_for(ada)
    refused = client.post(f"/deployments/{serving.pk}/rollback/")
    assert refused.status_code == 302 and refused["Location"] == f"/deployments/{serving.pk}/"
    page = client.get(refused["Location"]).content.decode()
    assert "Not rolled back:" in page and "nothing to go back to" in page
    assert "Roll back" not in page


def test_the_chart_shows_canary_and_stable_side_by_side(
    ada: User, serving: Deployment, fake_serving: FakeServing
) -> None:
    canary = add_revision(serving, 2, RevisionStatus.SERVING, traffic=10, is_canary=True)
    fake_serving.feed(canary, 200, 30.0, count=3, at=timezone.now() - timedelta(minutes=2))
    page = client_for(ada).get(f"/deployments/{serving.pk}/")
    (latency,) = [f for f in page.context["figures"] if f.key == "latency"]
    names = [t["name"] for t in latency.figure["data"]]
    assert "r1 · v1 p95" in names and "r2 · v2 p95" in names  # the role is in the revisions table


def test_the_curl_line_is_one_shell_command_that_sends_the_example(ada: User, serving: Deployment) -> None:
    import shlex

    example = {"dataframe_split": {"columns": ["it's"], "data": [["a b"]]}}
    Deployment.objects.filter(pk=serving.pk).update(input_example=example)
    page = client_for(ada).get(f"/deployments/{serving.pk}/")
    words = shlex.split(page.context["curl"])
    assert words[:3] == ["curl", "-X", "POST"]
    assert words[3] == "http://testserver/serve/demo/demo/digits-api/invocations"
    assert json.loads(words[words.index("-d") + 1]) == example


def test_without_an_example_of_its_own_the_page_shows_the_serving_models_logged_one(
    ada: User, serving: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex

    from apps.deployments import examples

    logged = {"inputs": [[0.0, 1.0]]}
    asked: list[int] = []

    def logged_example(deployment: Deployment, version: int) -> bytes:
        asked.append(version)
        return json.dumps(logged).encode()

    monkeypatch.setattr(examples, "input_example", logged_example)
    page = client_for(ada).get(f"/deployments/{serving.pk}/")
    words = shlex.split(page.context["curl"])
    assert json.loads(words[words.index("-d") + 1]) == logged and json.loads(page.context["example"]) == logged
    assert asked == [page.context["stable"].version]

    def mlflow_down(deployment: Deployment, version: int) -> bytes:
        raise examples.NoInputExample()

    monkeypatch.setattr(examples, "input_example", mlflow_down)
    page = client_for(ada).get(f"/deployments/{serving.pk}/")
    assert page.status_code == 200 and page.context["example"] == "" and "[...]" in page.context["curl"]

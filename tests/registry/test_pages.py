"""The models pages beyond who-may-see-what (tests/registry/matrix.py covers that): MLflow
down shows a message (pages) or answers 503 (API), never a 500; forms show the services'
errors with their status; the inbox swaps in place; the request's status stops polling
once it is settled. MLflow's registry is the FakeRegistry here."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.projects.models import Project
from apps.registry import services
from apps.registry.models import AliasHistory, PromotionRequest, RegisteredModel, Status
from tests.conftest import api_for, client_for
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db


@pytest.fixture
def asked(ada: User, project: Project, fake_registry: FakeRegistry) -> PromotionRequest:
    model = RegisteredModel(name="digits", project=project)
    return services.create_request(ada, model, version=2, alias="champion", justification="better")


def test_mlflow_down_is_a_message_on_pages_and_503_in_the_api(
    vic: User, asked: PromotionRequest, fake_registry: FakeRegistry
) -> None:
    fake_registry.down = True
    for url in ("/models/projects/demo/demo/", "/models/registered/digits/"):
        page = client_for(vic).get(url)
        assert page.status_code == 200, url
        assert "unreachable" in page.content.decode(), url
    # What Plinth knows needs no MLflow: the request page and the history.
    assert client_for(vic).get(f"/models/requests/{asked.pk}/").status_code == 200
    assert api_for(vic).get("/api/v1/models/digits/aliases/history/").status_code == 200
    for url in ("/api/v1/models/?project=demo/demo", "/api/v1/models/digits/"):
        response = api_for(vic).get(url)
        assert response.status_code == 503, url
        assert "unreachable" in response.json()["detail"]


def test_the_request_form_shows_the_services_errors(ada: User, project: Project, fake_registry: FakeRegistry) -> None:
    page = client_for(ada).get("/models/registered/digits/promote/?version=2")
    assert page.status_code == 200
    assert [c[0] for c in page.context["form"].fields["version"].choices] == [2, 1]
    fake_registry.models["digits"]["aliases"]["champion"] = 2
    refused = client_for(ada).post(
        "/models/registered/digits/promote/", {"version": 2, "alias": "champion", "justification": "x"}
    )
    assert refused.status_code == 409
    assert "already holds champion" in refused.content.decode()
    blank = client_for(ada).post("/models/registered/digits/promote/", {"version": 1, "alias": "champion"})
    assert blank.status_code == 400


def test_a_failing_gate_on_the_request_page_shows_the_numbers(
    ada: User, lin: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, gate_metric="accuracy", gate_comparison="gte")
    fake_registry.models["digits"]["aliases"]["champion"] = 2
    made = services.create_request(
        ada, RegisteredModel(name="digits", project=project), version=1, alias="champion", justification="x"
    )
    page = client_for(lin).get(f"/models/requests/{made.pk}/")
    assert 'data-gate="failed"' in page.content.decode()
    response = client_for(lin).post(f"/models/requests/{made.pk}/approve/", {"comment": ""})
    assert response.status_code == 409
    assert "0.95" in response.content.decode() and "0.9" in response.content.decode()


def test_the_inbox_swaps_in_place_and_answers_409_in_place(
    asked: PromotionRequest, lin: User, lin2: User, django_capture_on_commit_callbacks: Any
) -> None:
    headers = {"HX-Request": "true", "HX-Target": "inbox"}
    inbox = client_for(lin).get("/models/approvals/")
    assert [row["req"].pk for row in inbox.context["rows"]] == [asked.pk]
    with django_capture_on_commit_callbacks(execute=False):
        done = client_for(lin).post(
            f"/models/requests/{asked.pk}/approve/", {"from": "inbox", "comment": "ok"}, headers=headers
        )
    assert done.status_code == 200
    html = done.content.decode()
    assert html.lstrip().startswith('<section class="card" id="inbox"')
    assert 'hx-swap-oob="true"' in html and f"Request #{asked.pk} approved" in html
    assert "<html" not in html, "a fragment, not the page"
    late = client_for(lin2).post(f"/models/requests/{asked.pk}/reject/", {"from": "inbox"}, headers=headers)
    assert late.status_code == 409
    assert "only pending requests" in late.content.decode()


def badge(html: str) -> str:
    """The navigation's approvals badge as sent: its tag with the count, or the hidden placeholder."""
    found = re.search(r'<(a|span) id="nav-approvals"[^>]*>[^<]*</(a|span)>', html)
    assert found, "no approvals badge in the answer"
    return found.group(0)


def test_deciding_in_the_inbox_updates_the_navigation_badge_in_place(
    asked: PromotionRequest,
    ada: User,
    lin: User,
    project: Project,
    fake_registry: FakeRegistry,
    django_capture_on_commit_callbacks: Any,
) -> None:
    fake_registry.add_model("faces", "demo/demo", [{"accuracy": 0.8}])
    other = services.create_request(
        ada, RegisteredModel(name="faces", project=project), version=1, alias="champion", justification="x"
    )
    page = client_for(lin).get("/models/approvals/").content.decode()
    assert ">2</a>" in badge(page) and "hx-swap-oob" not in badge(page)
    assert 'hx-trigger="every 60s"' in badge(page), "a showing badge refreshes itself slowly"

    swap = {"HX-Request": "true", "HX-Target": "inbox"}
    with django_capture_on_commit_callbacks(execute=False):
        first = client_for(lin).post(f"/models/requests/{asked.pk}/approve/", {"from": "inbox"}, headers=swap)
    assert first.status_code == 200
    assert 'hx-swap-oob="true"' in badge(first.content.decode()) and ">1</a>" in badge(first.content.decode())

    last = client_for(lin).post(f"/models/requests/{other.pk}/reject/", {"from": "inbox"}, headers=swap)
    assert last.status_code == 200
    gone = badge(last.content.decode())
    assert gone.startswith("<span") and " hidden" in gone and 'hx-swap-oob="true"' in gone, "the badge disappears"


def test_the_badge_polls_the_inbox_for_its_count_alone_and_stops_at_zero(
    asked: PromotionRequest, lin: User, django_capture_on_commit_callbacks: Any
) -> None:
    poll = {"HX-Request": "true", "HX-Target": "nav-approvals"}
    counted = client_for(lin).get("/models/approvals/", headers=poll)
    assert counted.status_code == 200
    assert counted.content.decode().strip() == badge(counted.content.decode()), "the badge alone"
    assert ">1</a>" in counted.content.decode() and "hx-swap-oob" not in counted.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        services.reject(lin, asked, "no")
    done = client_for(lin).get("/models/approvals/", headers=poll)
    assert done.status_code == 286 and done.content.decode().strip().startswith('<span id="nav-approvals" hidden')


def test_the_status_stops_polling_once_settled(asked: PromotionRequest, vic: User) -> None:
    url = f"/models/requests/{asked.pk}/"
    headers = {"HX-Request": "true", "HX-Target": "status"}
    PromotionRequest.objects.filter(pk=asked.pk).update(status=Status.APPLYING)
    live = client_for(vic).get(url, headers=headers)
    assert live.status_code == 200 and 'hx-trigger="every 2s"' in live.content.decode()
    assert live.content.decode().lstrip().startswith('<section class="card" id="status"')
    assert "<html" not in live.content.decode() and "Evidence" not in live.content.decode()
    PromotionRequest.objects.filter(pk=asked.pk).update(status=Status.APPLIED)
    settled = client_for(vic).get(url, headers=headers)
    assert settled.status_code == 286 and "hx-trigger" not in settled.content.decode()


def test_the_policy_page_saves_for_leads(lin: User, ada: User, project: Project) -> None:
    form = {"approvers": "", "required_approvals": 1, "expiry_days": 3, "allowed_aliases": "champion, staging"}
    assert client_for(ada).post("/models/projects/demo/demo/policy/", form).status_code == 403
    assert client_for(lin).post("/models/projects/demo/demo/policy/", form).status_code == 302
    assert AuditEvent.objects.filter(verb="promotion.policy_updated", actor=lin).exists()
    page = client_for(ada).get("/models/projects/demo/demo/policy/").content.decode()
    assert "staging" in page and "after 3 days" in page
    bad = client_for(lin).post("/models/projects/demo/demo/policy/", {**form, "allowed_aliases": "v3"})
    assert bad.status_code == 400 and "not a usable alias" in bad.content.decode()


def test_rolling_back_with_nothing_before_is_409_on_the_page(
    ada: User, project: Project, fake_registry: FakeRegistry
) -> None:
    model = RegisteredModel.objects.create(name="digits", project=project)
    fake_registry.models["digits"]["aliases"]["champion"] = 1
    AliasHistory.objects.create(model=model, alias="champion", version=1)
    response = client_for(ada).post(
        "/models/registered/digits/rollback/", {"alias": "champion", "justification": "bad"}
    )
    assert response.status_code == 409
    assert "no previous holder" in response.content.decode()


def test_an_unknown_or_untagged_model_is_404(vic: User, project: Project, fake_registry: FakeRegistry) -> None:
    fake_registry.add_model("stray", None, [{"accuracy": 0.5}])
    assert client_for(vic).get("/models/registered/stray/").status_code == 404
    assert client_for(vic).get("/models/registered/nothing/").status_code == 404
    assert api_for(vic).get("/api/v1/models/stray/aliases/history/").status_code == 404

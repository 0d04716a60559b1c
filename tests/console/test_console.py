"""The console's pages do what they say: budgets and quotas (sum of quotas <= budget),
who has access to what (role, and whether it is direct or from an SSO group), templates,
SSO group mappings; and the "done when" walk of issue 6 as a platform admin."""

from __future__ import annotations

from typing import Any

import pytest

from apps.access.roles import Role
from apps.accounts.models import Membership, SsoGroupMapping, Team, User
from apps.audit.models import AuditEvent
from apps.console import sync
from apps.console.models import SyncStatus
from apps.launches.models import Template
from apps.projects.models import Project
from tests.compute.fakes_rbac import FakeAccessGateway
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db


def test_a_budget_cannot_go_below_the_quotas_already_given(root: User, project: Project, team: Team) -> None:
    Project.objects.create(
        team=team, slug="two", name="Two", gpu_quota=3, namespace="plinth-demo-two", mlflow_experiment_name="d/two"
    )
    client = client_for(root)
    refused = client.post("/console/teams/demo/budget/", {"gpu_budget": 4})
    assert refused.status_code == 409
    assert "already hold 5 GPUs" in refused.content.decode()
    assert client.post("/console/teams/demo/budget/", {"gpu_budget": 5}).status_code == 302
    team.refresh_from_db()
    assert team.gpu_budget == 5


def test_a_quota_beyond_the_budget_is_refused_wherever_it_is_set(lin: User, project: Project) -> None:
    # team budget 8: demo/demo may hold at most 8, the sum of all quotas never more.
    client = client_for(lin)
    edit = {"name": "Demo", "description": "", "backend": "local"}
    refused = client.post("/projects/demo/demo/edit/", {**edit, "gpu_quota": 9})
    assert refused.status_code == 409 and "at most 8" in refused.content.decode()
    assert client.post("/projects/demo/demo/edit/", {**edit, "gpu_quota": 8}).status_code == 302
    page = client_for(lin).get("/console/projects/demo/demo/")
    assert page.context["headroom"] == 8 and page.context["project"].gpu_quota == 8


def test_leads_cannot_change_budgets_or_map_groups(lin: User, team: Team) -> None:
    client = client_for(lin)
    assert client.post("/console/teams/demo/budget/", {"gpu_budget": 100}).status_code == 403
    assert client.post("/console/teams/demo/sso/", {"group": "all", "role": "lead"}).status_code == 403
    team.refresh_from_db()
    assert team.gpu_budget == 8 and not SsoGroupMapping.objects.exists()


def test_who_has_access_lists_role_and_source_per_team_project_and_user(
    root: User, lin: User, ada: User, vic: User, team: Team, project: Project
) -> None:
    carol = make_user("carol")
    Membership.objects.create(team=team, user=carol, role=Role.MEMBER, source="sso:ml-team")
    client = client_for(lin)
    rows = {a.user.username: (a.role, a.via) for a in client.get("/console/teams/demo/").context["access"]}
    assert rows == {
        "ada": ("member", "added directly"),
        "carol": ("member", "SSO group ml-team"),
        "lin": ("lead", "added directly"),
        "vic": ("viewer", "added directly"),
        "root": ("admin", "platform admin flag"),
    }
    project_page = client.get("/console/projects/demo/demo/").content.decode()
    assert 'data-access="carol"' in project_page and "SSO group ml-team" in project_page
    assert "<code>view</code>" in project_page and "<code>READ</code>" in project_page
    person = client.get("/console/users/carol/")
    [access] = person.context["access"]
    assert (access.team.slug, access.role, access.source) == ("demo", "member", "sso:ml-team")
    assert "launch jobs and sweeps" in person.content.decode()
    assert "API tokens" not in person.content.decode()  # accounts are for platform admins


def test_a_lead_sees_only_people_of_the_teams_they_lead(lin: User, ada: User, omar: User) -> None:
    client = client_for(lin)
    assert [u.username for u in client.get("/console/users/").context["page"].object_list] == ["ada", "lin"]
    assert client.get("/console/users/omar/").status_code == 404


def test_templates_are_created_and_edited_through_the_templates_service(lin: User, root: User, team: Team) -> None:
    body = {
        "team": "demo",
        "slug": "train",
        "name": "Train",
        "image": "ghcr.io/example/train:1",
        "command": '["python", "train.py", "--lr={lr}"]',
        "parameters": '{"lr": {"type": "float", "default": 0.01}}',
        "default_resources": '{"cpu": "1", "memory": "2Gi", "gpus": 0}',
        "max_resources": '{"cpu": "8", "memory": "64Gi", "gpus": 2}',
        "max_runtime_seconds": 3600,
        "backends": ["local", "kubernetes"],
        "is_active": "on",
    }
    assert client_for(lin).post("/console/templates/new/", body).status_code == 302
    template = Template.objects.get(team=team, slug="train")
    assert template.parameters == {"lr": {"type": "float", "default": 0.01}}
    bad = client_for(lin).post(f"/console/templates/{template.pk}/", {**body, "command": '"python train.py"'})
    assert bad.status_code == 400 and "Expected a JSON list" in bad.content.decode()
    # A global template is for platform admins: the service refuses a lead (403).
    assert client_for(lin).post("/console/templates/new/", {**body, "team": "", "slug": "g"}).status_code == 403
    assert AuditEvent.objects.filter(verb="template.created").count() == 1


def test_sso_mappings_are_managed_by_platform_admins(root: User, team: Team) -> None:
    client = client_for(root)
    assert client.post("/console/teams/demo/sso/", {"group": "ml-team", "role": "member"}).status_code == 302
    again = client.post("/console/teams/demo/sso/", {"group": "ml-team", "role": "lead"})
    assert again.status_code == 400 and "already mapped" in again.content.decode()
    mapping = SsoGroupMapping.objects.get()
    assert client.post(f"/console/teams/demo/sso/{mapping.pk}/delete/").status_code == 302
    assert not SsoGroupMapping.objects.exists()
    assert [e.verb for e in AuditEvent.objects.order_by("id")] == ["sso.mapping_added", "sso.mapping_removed"]


def test_the_nav_leads_admins_and_leads_to_the_console(root: User, lin: User, ada: User) -> None:
    assert 'href="/console/"' in client_for(root).get("/").content.decode()
    assert 'href="/console/"' in client_for(lin).get("/").content.decode()
    assert 'href="/console/"' not in client_for(ada).get("/").content.decode()


def test_done_when_an_admin_sets_up_a_team_and_sees_the_project_in_sync(
    root: User, settings: Any, monkeypatch: pytest.MonkeyPatch, omar: User
) -> None:
    """Issue 6's "done when": from the console, a platform admin creates a team and a
    Kubernetes project with a GPU quota, adds people with roles, and sees on the project
    page that namespace, bindings and quota are in sync; a member of another team sees none of it."""
    settings.PLINTH_KUBE_ACCESS_SYNC = True
    cluster = FakeAccessGateway()
    monkeypatch.setattr(sync, "cluster_api", lambda: cluster)
    for name in ("nora", "pia"):
        make_user(name)
    admin = client_for(root)
    team_form = {"slug": "vision", "name": "Vision", "description": "", "gpu_budget": 4, "lead": "nora"}
    assert admin.post("/teams/new/", team_form).status_code == 302
    project_form = {
        "team": "vision",
        "slug": "detect",
        "name": "Detect",
        "description": "",
        "gpu_quota": 3,
        "backend": "kubernetes",
        "namespace": "",
        "mlflow_experiment": "",
    }
    assert admin.post("/projects/new/", project_form).status_code == 302
    assert admin.post("/teams/vision/members/", {"username": "pia", "role": "viewer"}).status_code == 302
    assert admin.post("/console/projects/vision/detect/sync/").status_code == 302
    page = admin.get("/projects/vision/detect/")
    assert page.context["syncs"]["cluster"].status == SyncStatus.IN_SYNC
    assert cluster.read_object("ResourceQuota", "plinth-vision-detect", "plinth-gpu-quota")["spec"]["hard"] == {  # type: ignore[index]
        "requests.nvidia.com/gpu": "3"
    }
    viewers = cluster.read_object("RoleBinding", "plinth-vision-detect", "plinth-viewers")
    assert viewers is not None and [s["name"] for s in viewers["subjects"]] == ["pia"]
    outsider = client_for(omar)
    assert outsider.get("/projects/vision/detect/").status_code == 404
    assert outsider.get("/projects/vision/detect/access/").status_code == 404
    assert outsider.get("/console/projects/vision/detect/").status_code == 403
    assert outsider.get("/api/v1/projects/").json()["results"] == [
        p for p in outsider.get("/api/v1/projects/").json()["results"] if p["team"] != "vision"
    ]

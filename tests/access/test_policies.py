"""Named rules and lookups of apps.access that pages call instead of deciding inline, one
test per clause: API tokens (the account page and the console), the wording of a 404, GPU
usage outside Plinth's projects, and the pages a policy opens."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from apps.access import policies
from apps.accounts import services as account_services
from apps.accounts.models import ApiToken, User
from apps.projects.models import Project
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada_token(ada: User) -> ApiToken:
    token, _ = account_services.create_api_token(ada, name="laptop")
    return token


def revoked(token: ApiToken) -> bool:
    token.refresh_from_db()
    return token.revoked_at is not None


def test_a_platform_admin_revokes_anyones_token_in_the_console(root: User, ada_token: ApiToken) -> None:
    response = client_for(root).post(f"/console/tokens/{ada_token.pk}/revoke/")
    assert response.status_code == 302
    assert revoked(ada_token)


@pytest.mark.parametrize("who", ["lin", "ada"])
def test_nobody_else_revokes_through_the_console(who: str, people: dict[str, User], ada_token: ApiToken) -> None:
    # lin may use the console (a lead) but not its account pages; ada may not use it at all.
    assert client_for(people[who]).post(f"/console/tokens/{ada_token.pk}/revoke/").status_code == 403
    assert not revoked(ada_token)


def test_an_unknown_token_in_the_console_is_a_404(root: User) -> None:
    assert client_for(root).post("/console/tokens/987654/revoke/").status_code == 404


def test_the_account_page_revokes_ones_own_token(ada: User, ada_token: ApiToken) -> None:
    assert client_for(ada).post(f"/account/tokens/{ada_token.pk}/revoke/").status_code == 302
    assert revoked(ada_token)


@pytest.mark.parametrize("who", ["lin", "root"])
def test_the_account_page_never_reaches_someone_elses_token(
    who: str, people: dict[str, User], ada_token: ApiToken
) -> None:
    assert client_for(people[who]).post(f"/account/tokens/{ada_token.pk}/revoke/").status_code == 404
    assert not revoked(ada_token)


def test_an_invisible_project_reads_as_a_missing_one(omar: User, project: Project) -> None:
    hidden = client_for(omar).get(f"/projects/{project.team.slug}/{project.slug}/")
    missing = client_for(omar).get(f"/projects/{project.team.slug}/no-such-project/")
    assert hidden.status_code == missing.status_code == 404
    assert "No such project." in hidden.content.decode()
    assert "No such project." in missing.content.decode()


def test_usage_of_pods_outside_plinth_is_for_platform_admins(lin: User, root: User) -> None:
    assert policies.can_see_foreign_usage(root) is True
    assert policies.can_see_foreign_usage(lin) is False
    assert policies.can_see_foreign_usage(AnonymousUser()) is False
    root.is_active = False
    assert policies.can_see_foreign_usage(root) is False


@pytest.mark.parametrize(("who", "status"), [("root", 200), ("lin", 200), ("ada", 403), ("omar", 403)])
def test_the_audit_log_is_opened_by_its_policy_for_the_page_and_the_api(
    who: str, status: int, people: dict[str, User]
) -> None:
    assert client_for(people[who]).get("/audit/").status_code == status
    assert api_for(people[who]).get("/api/v1/audit/").status_code == status


def test_the_console_navigation_offers_admin_links_to_platform_admins_only(lin: User, root: User) -> None:
    assert "Django admin" in client_for(root).get("/console/").content.decode()
    assert "Django admin" not in client_for(lin).get("/console/").content.decode()

"""SSO: OpenID Connect sign-in against a small identity provider served by the suite
(tests/accounts/oidc_provider.py), with identity-provider groups mapped to team roles at
every login."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client

from apps.access.roles import Role
from apps.accounts import services
from apps.accounts.models import Membership, SsoGroupMapping, Team, User
from apps.audit.models import AuditEvent
from tests.accounts.oidc_provider import OidcProvider

pytestmark = pytest.mark.django_db


@pytest.fixture
def idp(settings: Any) -> Iterator[OidcProvider]:
    import portal.urls  # noqa: F401 - loaded as the environment configures it (SSO off), before the flag flips

    provider = OidcProvider()
    for name, value in provider.settings().items():
        setattr(settings, name, value)
    settings.OIDC_USE_PKCE = True
    settings.PLINTH_OIDC_ENABLED = True
    settings.AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        "apps.accounts.oidc.PlinthOIDCBackend",
    ]
    settings.ROOT_URLCONF = "tests.accounts.oidc_urls"
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture
def mappings(team: Team, other_team: Team) -> None:
    SsoGroupMapping.objects.create(group="ml-leads", team=team, role=Role.LEAD)
    SsoGroupMapping.objects.create(group="ml-all", team=team, role=Role.VIEWER)
    SsoGroupMapping.objects.create(group="ml-all", team=other_team, role=Role.MEMBER)


def sign_in(idp: OidcProvider, client: Client, username: str, groups: list[str]) -> Any:
    """The browser's round trip: Plinth -> provider (which signs the person in) -> Plinth."""
    idp.next_login = {"sub": f"id-{username}", "preferred_username": username, "email": f"{username}@corp.test"}
    idp.next_login["groups"] = groups
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302 and start["Location"].startswith(f"{idp.url}/authorize?")
    assert parse_qs(urlsplit(start["Location"]).query)["code_challenge_method"] == ["S256"]
    at_provider = requests.get(start["Location"], allow_redirects=False, timeout=5)
    assert at_provider.status_code == 302
    back = urlsplit(at_provider.headers["Location"])
    return client.get(back.path, dict(parse_qs(back.query)))


def roles_of(username: str) -> dict[str, tuple[str, str]]:
    return {
        m.team.slug: (m.role, m.source)
        for m in Membership.objects.filter(user__username=username).select_related("team")
    }


def test_the_login_page_offers_sso_when_it_is_configured(idp: OidcProvider) -> None:
    body = Client().get("/login/").content.decode()
    assert 'href="/oidc/authenticate/"' in body and "Sign in with SSO" in body


def test_a_first_sso_login_creates_the_user_and_applies_group_roles(idp: OidcProvider, mappings: None) -> None:
    client = Client()
    response = sign_in(idp, client, "grace", ["ml-leads", "ml-all", "unmapped"])
    assert response.status_code == 302 and response["Location"] == "/"
    grace = User.objects.get(username="grace")
    assert grace.email == "grace@corp.test" and not grace.has_usable_password()
    # ml-leads and ml-all both map to demo: the strongest role wins.
    assert roles_of("grace") == {"demo": ("lead", "sso:ml-leads"), "other": ("member", "sso:ml-all")}
    assert client.get("/").context["user"].username == "grace"
    assert idp.token_requests[0]["code_verifier"]  # PKCE
    added = AuditEvent.objects.filter(verb="team.member_added", actor_label="system")
    assert {e.team_label for e in added} == {"demo", "other"}


def test_each_login_reapplies_the_groups(idp: OidcProvider, mappings: None) -> None:
    sign_in(idp, Client(), "grace", ["ml-leads", "ml-all"])
    sign_in(idp, Client(), "grace", ["ml-all"])
    assert roles_of("grace") == {"demo": ("viewer", "sso:ml-all"), "other": ("member", "sso:ml-all")}
    sign_in(idp, Client(), "grace", [])
    assert roles_of("grace") == {}
    verbs = list(AuditEvent.objects.filter(actor_label="system").values_list("verb", flat=True).order_by("id"))
    assert verbs.count("team.role_changed") == 1 and verbs.count("team.member_removed") == 2


def test_a_direct_membership_outranks_the_identity_provider(
    idp: OidcProvider, mappings: None, ada: User, team: Team
) -> None:
    response = sign_in(idp, Client(), "ada", ["ml-leads"])  # the local account ada signs in through SSO
    assert response.status_code == 302 and response["Location"] == "/"
    assert roles_of("ada")["demo"] == ("member", "direct")
    assert Membership.objects.get(user=ada, team=team).role == Role.MEMBER


def test_a_deactivated_user_cannot_sign_in_through_sso(idp: OidcProvider, mappings: None, root: User) -> None:
    sign_in(idp, Client(), "grace", ["ml-leads"])
    services.deactivate_user(root, User.objects.get(username="grace"))
    client = Client()
    sign_in(idp, client, "grace", ["ml-leads"])
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302  # sent to the login page


def test_sso_is_off_without_configuration(client: Client) -> None:
    assert client.get("/oidc/authenticate/").status_code == 404
    assert b"Sign in with SSO" not in client.get("/login/").content

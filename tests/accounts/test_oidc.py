"""SSO: OpenID Connect sign-in against a small identity provider served by the suite
(tests/accounts/oidc_provider.py), with identity-provider groups mapped to team roles at
every login."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.access.roles import Role
from apps.accounts import services
from apps.accounts.models import Membership, SsoGroupMapping, Team, User
from apps.audit.models import AuditEvent
from apps.core.errors import NotAllowed
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


def sign_in(
    idp: OidcProvider,
    client: Client,
    username: str,
    groups: list[str] | None = None,
    *,
    sub: str | None = None,
    email_verified: bool = True,
) -> Any:
    """The browser's round trip: Plinth -> provider (which signs the person in) -> Plinth.
    The person's subject at the provider is `sub` (default `id-<username>`)."""
    idp.next_login = {
        "sub": sub or f"id-{username}",
        "preferred_username": username,
        "email": f"{username}@corp.test",
        "email_verified": email_verified,
    }
    idp.next_login["groups"] = groups or []
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
    idp: OidcProvider, mappings: None, ada: User, team: Team, root: User
) -> None:
    # The local account ada, linked by an admin, signs in through SSO.
    services.link_sso_identity(root, ada, issuer=idp.url, subject="id-ada")
    client = Client()
    response = sign_in(idp, client, "ada", ["ml-leads"])
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(ada.pk)
    assert roles_of("ada")["demo"] == ("member", "direct")
    assert Membership.objects.get(user=ada, team=team).role == Role.MEMBER


def signed_in_as(client: Client) -> str | None:
    """The username the client's session belongs to (None: not signed in)."""
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


@pytest.mark.parametrize("name", ["ada", "root", "Root"])
def test_an_sso_user_named_like_an_existing_account_does_not_sign_in_as_it(
    idp: OidcProvider, mappings: None, ada: User, root: User, name: str
) -> None:
    """Before: `preferred_username` matched the account, so an identity-provider user called
    `root` became the platform admin. Now the sign-in is refused, nothing is created or
    changed, and the attempt is audited against the account it named."""
    client = Client()
    response = sign_in(idp, client, name, ["ml-leads"], sub="attacker-1")
    assert signed_in_as(client) is None
    assert response.status_code == 302
    page = client.get("/login/")
    assert "already exists" in page.content.decode() and "link it" in page.content.decode()
    assert User.objects.count() == 2 and not User.objects.exclude(sso_subject="").exists()
    assert roles_of("ada") == {"demo": ("member", "direct")} and roles_of("root") == {}
    event = AuditEvent.objects.get(verb="user.sso_refused")
    assert event.target_id == str(User.objects.get(username__iexact=name).pk)
    assert event.after == {"issuer": idp.url, "subject": "attacker-1", "username": name}


def test_an_sso_user_named_like_another_sso_account_does_not_sign_in_as_it(idp: OidcProvider) -> None:
    sign_in(idp, Client(), "grace", sub="grace-at-idp")
    impostor = Client()
    sign_in(idp, impostor, "grace", sub="someone-else")
    assert signed_in_as(impostor) is None
    assert User.objects.get(username="grace").sso_subject == "grace-at-idp"


def test_the_same_issuer_and_subject_sign_in_as_the_same_user_after_a_rename(idp: OidcProvider) -> None:
    first = Client()
    sign_in(idp, first, "grace", sub="0f7c-grace")
    grace = User.objects.get(username="grace")
    assert (grace.sso_issuer, grace.sso_subject) == (idp.url, "0f7c-grace")
    renamed = Client()
    response = sign_in(idp, renamed, "grace.hopper", sub="0f7c-grace")  # renamed at the provider
    assert response["Location"] == "/"
    assert renamed.session["_auth_user_id"] == str(grace.pk)
    assert User.objects.count() == 1 and User.objects.get().username == "grace"


def test_a_sign_up_is_audited_with_the_identity(idp: OidcProvider) -> None:
    sign_in(idp, Client(), "grace", sub="0f7c-grace")
    grace = User.objects.get(username="grace")
    event = AuditEvent.objects.get(verb="user.sso_signed_up")
    assert event.actor == grace and event.target_id == str(grace.pk)
    assert event.after == {
        "username": "grace",
        "issuer": idp.url,
        "subject": "0f7c-grace",
        "email": "grace@corp.test",
    }


def test_an_unverified_email_is_not_copied(idp: OidcProvider) -> None:
    sign_in(idp, Client(), "grace", email_verified=False)
    assert User.objects.get(username="grace").email == ""


def test_userinfo_for_another_subject_is_refused(idp: OidcProvider) -> None:
    """OpenID Connect Core §5.3.2: the userinfo `sub` must match the ID token's."""
    idp.userinfo_overrides = {"sub": "somebody-else"}
    client = Client()
    sign_in(idp, client, "grace")
    assert signed_in_as(client) is None and not User.objects.exists()


def test_an_admin_links_an_existing_account_with_link_sso_and_it_is_audited(
    idp: OidcProvider, ada: User, root: User
) -> None:
    out = StringIO()
    call_command("link_sso", "ada", issuer=idp.url, subject="ada-at-idp", by="root", stdout=out)
    assert "now signs in through SSO" in out.getvalue()
    event = AuditEvent.objects.get(verb="user.sso_linked")
    assert event.actor == root
    assert event.after == {"username": "ada", "issuer": idp.url, "subject": "ada-at-idp"}
    client = Client()
    sign_in(idp, client, "ada.lovelace", sub="ada-at-idp")  # any name: the identity decides
    assert signed_in_as(client) == "ada"
    # The same identity cannot be linked twice, and a platform admin's account never is.
    omar = User.objects.create_user("omar2")
    with pytest.raises(CommandError, match="already linked to ada"):
        call_command("link_sso", "omar2", issuer=idp.url, subject="ada-at-idp")
    with pytest.raises(CommandError, match="platform admin"):
        call_command("link_sso", "root", issuer=idp.url, subject="root-at-idp")
    assert not User.objects.get(pk=root.pk).has_sso_link and not User.objects.get(pk=omar.pk).has_sso_link
    call_command("link_sso", "ada", unlink=True, stdout=StringIO())
    assert AuditEvent.objects.get(verb="user.sso_unlinked").actor_label == "system"
    after_unlink = Client()
    sign_in(idp, after_unlink, "ada.lovelace", sub="ada-at-idp")
    assert signed_in_as(after_unlink) == "ada.lovelace"  # unlinked: a new account, never ada's


def test_only_platform_admins_link_accounts(idp: OidcProvider, ada: User, lin: User) -> None:
    with pytest.raises(NotAllowed):
        services.link_sso_identity(lin, ada, issuer=idp.url, subject="x")
    assert not User.objects.get(pk=ada.pk).has_sso_link


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

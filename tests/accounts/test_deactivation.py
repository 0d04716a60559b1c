"""Deactivating a user ends their sessions and API tokens at once; only platform admins
deactivate, never themselves; reactivation restores roles but not revoked tokens."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.models import ApiToken, Membership, User, hash_token
from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, NotAllowed
from tests.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def test_deactivation_ends_sessions_and_tokens_at_once(root: User, ada: User, lin: User) -> None:
    browser, laptop = signed_in("ada"), signed_in("ada")
    lins = signed_in("lin")
    _, key = services.create_api_token(ada, name="laptop")
    assert browser.get("/").status_code == 200 and with_token(key).get("/api/v1/me/").status_code == 200

    response = client_for(root).post("/console/users/ada/deactivate/")
    assert response.status_code == 302

    assert browser.get("/").status_code == 302 and laptop.get("/account/").status_code == 302
    assert with_token(key).get("/api/v1/me/").status_code == 401
    assert lins.get("/").status_code == 200  # other people's sessions are untouched
    assert not any(s.get_decoded().get("_auth_user_id") == str(ada.pk) for s in Session.objects.all()), (
        "ada's session rows are gone"
    )
    event = AuditEvent.objects.get(verb="user.deactivated")
    assert event.after["sessions_ended"] == 2 and event.after["tokens_revoked"] == 1  # type: ignore[index]
    # Signing in again is refused, and so is a new token for the API.
    assert Client().post("/login/", {"username": "ada", "password": PASSWORD}).status_code == 200
    assert APIClient().post("/api/v1/auth/token/", {"username": "ada", "password": PASSWORD}).status_code == 400


def test_tokens_of_an_inactive_user_are_unusable_even_if_not_revoked(ada: User) -> None:
    """The second lock: ApiTokenQuerySet.usable() requires an active owner."""
    token, key = services.create_api_token(ada, name="ci")
    User.objects.filter(pk=ada.pk).update(is_active=False)
    assert not ApiToken.objects.usable().filter(pk=token.pk).exists()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    assert with_token(key).get("/api/v1/me/").status_code == 401


def test_only_platform_admins_deactivate_and_never_themselves(root: User, lin: User, ada: User) -> None:
    with pytest.raises(NotAllowed):
        services.deactivate_user(lin, ada)
    with pytest.raises(Conflict):
        services.deactivate_user(root, root)
    assert client_for(lin).post("/console/users/ada/deactivate/").status_code == 403
    ada.refresh_from_db()
    assert ada.is_active


def test_reactivation_restores_roles_not_tokens(root: User, ada: User) -> None:
    _, key = services.create_api_token(ada, name="laptop")
    services.deactivate_user(root, ada)
    services.reactivate_user(root, ada)
    assert Membership.objects.filter(user=ada, team__slug="demo", role="member").exists()
    assert with_token(key).get("/api/v1/me/").status_code == 401
    assert signed_in("ada").get("/").status_code == 200


def test_a_platform_admin_revokes_anyones_token_from_the_console(root: User, ada: User, lin: User) -> None:
    token, key = services.create_api_token(ada, name="ci")
    assert client_for(lin).post(f"/console/tokens/{token.pk}/revoke/").status_code == 403
    assert with_token(key).get("/api/v1/me/").status_code == 200
    response = client_for(root).post(f"/console/tokens/{token.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/console/users/ada/"
    assert with_token(key).get("/api/v1/me/").status_code == 401
    assert AuditEvent.objects.get(verb="token.revoked").actor == root


def test_the_plain_token_is_never_stored(ada: User) -> None:
    token, key = services.create_api_token(ada, name="laptop")
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert key not in {str(v) for v in row.values()}
    assert row["digest"] == hash_token(key)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken")
        assert all(key not in str(cell) for record in cursor.fetchall() for cell in record)


def test_an_admin_creates_an_sso_only_user(root: User) -> None:
    response = client_for(root).post(
        "/console/users/new/", {"username": "newbie", "email": "newbie@example.test", "password": ""}
    )
    assert response.status_code == 302
    newbie = User.objects.get(username="newbie")
    assert not newbie.has_usable_password() and newbie.is_active
    weak = client_for(root).post("/console/users/new/", {"username": "weak", "password": "123"})
    assert weak.status_code == 400 and not User.objects.filter(username="weak").exists()
    twice = client_for(root).post("/console/users/new/", {"username": "NEWBIE"})
    assert twice.status_code == 400

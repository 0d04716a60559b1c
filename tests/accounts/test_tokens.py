"""API tokens: several per user, hashed, shown once, expiring, revocable; and `me`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.models import ApiToken, User, hash_token
from apps.core.errors import InvalidInput, NotAllowed
from tests.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_password_exchange_returns_a_token_that_works(ada: User) -> None:
    response = APIClient().post("/api/v1/auth/token/", {"username": "ada", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    key = response.json()["token"]
    me = with_token(key).get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json() == {
        "username": "ada",
        "email": "ada@example.test",
        "first_name": "",
        "last_name": "",
        "is_platform_admin": False,
        "memberships": [{"team": "demo", "role": "member"}],
    }


def test_wrong_credentials_are_a_400_and_create_nothing(ada: User) -> None:
    response = APIClient().post("/api/v1/auth/token/", {"username": "ada", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert not ApiToken.objects.exists()
    missing = APIClient().post("/api/v1/auth/token/", {"username": "ada"}, format="json")
    assert missing.status_code == 400
    assert "password" in missing.json()


def test_only_the_digest_is_stored(ada: User) -> None:
    token, key = services.create_api_token(ada, name="laptop")
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.digest == hash_token(key)
    assert key not in {stored.digest, stored.prefix, stored.name}
    assert key.startswith(stored.prefix)


def test_a_user_holds_several_named_tokens_and_use_is_recorded(ada: User) -> None:
    _, first = services.create_api_token(ada, name="laptop")
    _, second = services.create_api_token(ada, name="ci")
    assert with_token(first).get("/api/v1/me/").status_code == 200
    assert with_token(second).get("/api/v1/me/").status_code == 200
    assert ApiToken.objects.filter(user=ada, last_used_at__isnull=False).count() == 2


def test_a_revoked_token_stops_working_at_once(ada: User) -> None:
    token, key = services.create_api_token(ada, name="laptop")
    services.revoke_api_token(ada, token)
    response = with_token(key).get("/api/v1/me/")
    assert response.status_code == 401


def test_an_expired_token_is_refused(ada: User) -> None:
    token, key = services.create_api_token(ada, name="short", expires_at=timezone.now() + timedelta(minutes=5))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert with_token(key).get("/api/v1/me/").status_code == 401


def test_a_deactivated_users_token_is_refused(ada: User) -> None:
    _, key = services.create_api_token(ada, name="laptop")
    User.objects.filter(pk=ada.pk).update(is_active=False)
    assert with_token(key).get("/api/v1/me/").status_code == 401


def test_a_garbage_token_is_a_401() -> None:
    assert with_token("plt_not-a-real-token").get("/api/v1/me/").status_code == 401


def test_nobody_revokes_someone_elses_token(ada: User, lin: User) -> None:
    token, key = services.create_api_token(ada, name="laptop")
    with pytest.raises(NotAllowed):
        services.revoke_api_token(lin, token)
    assert with_token(key).get("/api/v1/me/").status_code == 200
    # Through the page, another user's token id is simply not found.
    assert client_for(lin).post(f"/account/tokens/{token.pk}/revoke/").status_code == 404


def test_a_token_needs_a_name_and_a_future_expiry(ada: User) -> None:
    with pytest.raises(InvalidInput):
        services.create_api_token(ada, name="  ")
    with pytest.raises(InvalidInput):
        services.create_api_token(ada, name="old", expires_at=timezone.now() - timedelta(days=1))
    assert not ApiToken.objects.exists()


def test_the_account_page_shows_a_new_key_once(ada: User) -> None:
    client = client_for(ada)
    created = client.post("/account/", {"name": "notebook", "expires_in_days": "30"})
    assert created.status_code == 201
    token = ApiToken.objects.get(user=ada)
    key = created.context["new_key"]
    assert key.encode() in created.content
    assert token.expires_at is not None
    assert key.encode() not in client.get("/account/").content
    revoked = client.post(f"/account/tokens/{token.pk}/revoke/")
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None

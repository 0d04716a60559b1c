"""API tokens: several per user, hashed, shown once, expiring, revocable; and `me`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
    """Post/redirect/get: the POST answers a redirect (so refreshing the page that shows the
    key repeats a GET, not the creation), the next GET shows the key, later ones never."""
    client = client_for(ada)
    created = client.post("/account/", {"name": "notebook", "expires_in_days": "30"})
    assert created.status_code == 302 and created["Location"] == "/account/"
    assert key_not_in_response(created)
    shown = client.get("/account/")
    key = shown.context["new_key"]
    token = ApiToken.objects.get(user=ada)
    assert token.digest == hash_token(key) and key.encode() in shown.content
    assert "no-store" in shown["Cache-Control"]
    assert token.expires_at is not None
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    refreshed = client.get("/account/")
    assert key.encode() not in refreshed.content and "new_key" not in refreshed.context
    assert ApiToken.objects.filter(user=ada).count() == 1
    assert with_token(key).get("/api/v1/me/").status_code == 200
    revoked = client.post(f"/account/tokens/{token.pk}/revoke/")
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def key_not_in_response(response: Any) -> bool:
    return b"plt_" not in response.content


def test_the_new_key_is_shown_only_to_the_session_that_created_it(ada: User) -> None:
    creator, other_browser = client_for(ada), client_for(ada)
    creator.post("/account/", {"name": "notebook"})
    assert "new_key" not in other_browser.get("/account/").context
    assert "new_key" in creator.get("/account/").context


def test_a_duplicate_token_name_is_a_400_on_the_page_and_in_the_api(ada: User) -> None:
    client = client_for(ada)
    client.post("/account/", {"name": "laptop"})
    again = client.post("/account/", {"name": "laptop"})
    assert again.status_code == 400
    assert "already have a token called 'laptop'" in again.context["form"].errors["name"][0]
    api = APIClient().post(
        "/api/v1/auth/token/", {"username": "ada", "password": PASSWORD, "name": "laptop"}, format="json"
    )
    assert api.status_code == 400 and "already have a token" in api.json()["name"][0]
    assert ApiToken.objects.filter(user=ada, name="laptop").count() == 1


def test_a_revoked_tokens_name_can_be_used_again_and_other_users_names_are_theirs(ada: User, lin: User) -> None:
    token, _ = services.create_api_token(ada, name="laptop")
    services.create_api_token(lin, name="laptop")
    services.revoke_api_token(ada, token)
    services.create_api_token(ada, name="laptop")
    assert ApiToken.objects.filter(user=ada, name="laptop").count() == 2


def test_two_password_exchanges_without_a_name_get_numbered_names(ada: User) -> None:
    for _ in range(2):
        response = APIClient().post("/api/v1/auth/token/", {"username": "ada", "password": PASSWORD}, format="json")
        assert response.status_code == 200
    assert set(ApiToken.objects.filter(user=ada).values_list("name", flat=True)) == {"api login", "api login (2)"}


def test_the_api_sets_an_expiry_and_an_expired_token_is_a_401_that_says_so(ada: User) -> None:
    when = (timezone.now() + timedelta(days=7)).replace(microsecond=0)
    response = APIClient().post(
        "/api/v1/auth/token/",
        {"username": "ada", "password": PASSWORD, "name": "ci", "expires_at": when.isoformat()},
        format="json",
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(user=ada, name="ci")
    assert token.expires_at == when
    key = response.json()["token"]
    assert with_token(key).get("/api/v1/me/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = with_token(key).get("/api/v1/me/")
    assert expired.status_code == 401 and "This token expired at" in expired.json()["detail"]


def test_an_expiry_in_the_past_is_a_400_and_creates_nothing(ada: User) -> None:
    response = APIClient().post(
        "/api/v1/auth/token/",
        {"username": "ada", "password": PASSWORD, "expires_at": "2001-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400 and "future" in response.json()["expires_at"][0]
    assert not ApiToken.objects.exists()


def test_a_revoked_token_is_a_401_that_says_so(ada: User) -> None:
    token, key = services.create_api_token(ada, name="laptop")
    services.revoke_api_token(ada, token)
    response = with_token(key).get("/api/v1/me/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]

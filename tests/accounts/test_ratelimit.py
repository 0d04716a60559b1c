"""The login page and the token endpoint are rate-limited per address and per account: a
429 with a lockout message (never a 500), and the right password does not get through
while locked."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small_limits(settings: Any) -> None:
    settings.PLINTH_LOGIN_FAILURES_PER_USER = 3
    settings.PLINTH_LOGIN_FAILURES_PER_IP = 5
    settings.PLINTH_LOGIN_WINDOW_SECONDS = 600


def login(username: str, password: str, ip: str = "10.0.0.1") -> Any:
    return Client(REMOTE_ADDR=ip).post("/login/", {"username": username, "password": password})


def token(username: str, password: str, ip: str = "10.0.0.1") -> Any:
    return APIClient(REMOTE_ADDR=ip).post(
        "/api/v1/auth/token/", {"username": username, "password": password}, format="json"
    )


def test_an_account_is_locked_after_repeated_failures_even_for_the_right_password(ada: User) -> None:
    assert [login("ada", "wrong").status_code for _ in range(3)] == [200, 200, 200]
    locked = login("ada", PASSWORD, ip="10.9.9.9")  # another address: the account's own limit
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts for this account" in locked.content.decode()
    assert int(locked["Retry-After"]) > 0
    assert "_auth_user_id" not in Client().session


def test_an_address_is_locked_after_failures_across_accounts(ada: User, lin: User, vic: User) -> None:
    for username in ("ada", "lin", "vic", "ada", "lin"):
        assert login(username, "wrong", ip="10.0.0.2").status_code == 200
    blocked = login("vic", PASSWORD, ip="10.0.0.2")
    assert blocked.status_code == 429 and "your address" in blocked.content.decode()
    assert login("vic", PASSWORD, ip="10.0.0.3").status_code == 302  # from elsewhere vic gets in


def test_a_successful_sign_in_clears_the_accounts_count(ada: User) -> None:
    login("ada", "wrong")
    login("ada", "wrong")
    assert login("ada", PASSWORD).status_code == 302
    assert [login("ada", "wrong").status_code for _ in range(2)] == [200, 200]
    assert login("ada", PASSWORD).status_code == 302


def test_the_token_endpoint_locks_out_with_a_429_json_answer(ada: User) -> None:
    assert [token("ada", "wrong").status_code for _ in range(3)] == [400, 400, 400]
    locked = token("ada", PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.json()["detail"]
    assert locked["Retry-After"]
    assert not ApiToken.objects.exists()


def test_failures_on_the_page_and_the_api_add_up(ada: User) -> None:
    login("ada", "wrong")
    token("ada", "wrong")
    login("ada", "wrong")
    assert token("ada", PASSWORD).status_code == 429


def test_unknown_usernames_are_limited_too() -> None:
    statuses = [login("nobody", "x", ip="10.0.0.4").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]

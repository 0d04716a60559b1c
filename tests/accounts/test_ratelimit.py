"""The login page and the token endpoint are rate-limited per account from one address, per
address and per account overall: a 429 with a lockout message that says when it ends (never
a 500); the right password does not get through a lock from the guessing address, but does
from elsewhere; attempts are counted before the password is checked, so simultaneous guesses
cannot slip past the limit; a platform admin can lift the locks."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.models import ApiToken, User
from apps.audit.models import AuditEvent
from tests.accounts import gated_backend
from tests.conftest import PASSWORD, client_for

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


def test_an_account_is_locked_from_the_guessing_address_even_for_the_right_password(ada: User) -> None:
    assert [login("ada", "wrong").status_code for _ in range(3)] == [200, 200, 200]
    locked = login("ada", PASSWORD)  # the guesser's address: even the right password is refused
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts for this account from your address" in locked.content.decode()
    assert int(locked["Retry-After"]) > 0
    assert "_auth_user_id" not in Client().session


def test_the_right_password_from_another_address_still_works_while_one_address_is_locked(ada: User) -> None:
    # Before: 3 failures locked the account everywhere, so anyone could lock anyone out.
    assert [login("ada", "wrong").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert login("ada", PASSWORD, ip="10.9.9.9").status_code == 302
    assert login("ada", PASSWORD).status_code == 429  # the guesser's address stays locked


def test_nobody_locks_a_platform_admin_out_from_elsewhere(root: User) -> None:
    for _ in range(5):
        login("root", "wrong", ip="203.0.113.7")
    assert login("root", PASSWORD, ip="10.0.0.50").status_code == 302


def test_the_lockout_says_when_it_ends(ada: User, settings: Any) -> None:
    for _ in range(3):
        login("ada", "wrong")
    before = time.time()
    locked = login("ada", PASSWORD)
    retry_after = int(locked["Retry-After"])
    assert 0 < retry_after <= settings.PLINTH_LOGIN_WINDOW_SECONDS
    ends = datetime.fromtimestamp(before + retry_after, tz=UTC)
    body = locked.content.decode()
    assert f"Try again in {math.ceil(retry_after / 60)} minutes" in body
    # The end time, to the minute (the request may straddle a minute boundary).
    assert any(f"after {t:%H:%M} UTC" in body for t in (ends, ends - timedelta(minutes=1))), body


def test_a_ceiling_per_account_holds_against_guesses_from_many_addresses(ada: User, settings: Any) -> None:
    settings.PLINTH_LOGIN_ACCOUNT_CEILING = 6
    assert [login("ada", "wrong", ip=f"10.1.0.{i}").status_code for i in range(6)] == [200] * 6
    locked = login("ada", PASSWORD, ip="10.2.0.1")
    assert locked.status_code == 429 and "for this account." in locked.content.decode()


def test_a_platform_admin_unlocks_an_account_and_it_is_audited(ada: User, lin: User, root: User) -> None:
    for _ in range(4):
        login("ada", "wrong")
    assert login("ada", PASSWORD).status_code == 429
    assert client_for(lin).post("/console/users/ada/unlock/").status_code == 403
    assert login("ada", PASSWORD).status_code == 429
    response = client_for(root).post("/console/users/ada/unlock/")
    assert response.status_code == 302 and response["Location"] == "/console/users/ada/"
    assert login("ada", PASSWORD).status_code == 302  # from the address that was locked
    event = AuditEvent.objects.get(verb="user.sign_in_unlocked")
    assert event.actor == root and event.target_id == str(ada.pk)
    assert event.after == {"username": "ada", "attempts_counted": 3}  # the refused 4th and 5th are not counted


def test_unlocking_lifts_the_account_ceiling_too(ada: User, root: User, settings: Any) -> None:
    settings.PLINTH_LOGIN_ACCOUNT_CEILING = 2
    login("ada", "wrong", ip="10.1.0.1")
    login("ada", "wrong", ip="10.1.0.2")
    assert login("ada", PASSWORD, ip="10.1.0.3").status_code == 429
    services.unlock_sign_in(root, ada)
    assert login("ada", PASSWORD, ip="10.1.0.3").status_code == 302


def _race(settings: Any, ips: list[str]) -> tuple[int, list[int]]:
    """Send one wrong sign-in for ada from each of `ips`, all at once, through the gated
    backend; return how many reached the password check and the status codes."""
    settings.AUTHENTICATION_BACKENDS = ["tests.accounts.gated_backend.GatedBackend"]
    gated_backend.GATE = gate = gated_backend.Gate()
    statuses: list[int] = []
    start = threading.Barrier(len(ips))

    def attempt(ip: str) -> None:
        start.wait()
        try:
            statuses.append(login("ada", "wrong", ip=ip).status_code)
        finally:
            gate.done()

    threads = [threading.Thread(target=attempt, args=(ip,)) for ip in ips]
    for thread in threads:
        thread.start()
    try:
        assert gate.wait_until_settled(len(ips)), "the attempts never settled"
    finally:
        gate.release.set()
        for thread in threads:
            thread.join(60)
    return gate.checks, statuses


REDIS_URL = os.environ.get("PLINTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["locmem", "redis"])
def cache_backend(request: Any, settings: Any) -> Iterator[str]:
    """Each race runs on LocMem (the embedded default) and on the real Redis production uses
    (skipped when Redis does not answer, unless PLINTH_REQUIRE_REDIS=1 makes that a failure).
    The Redis keys get a prefix of their own and are deleted afterwards."""
    if request.param == "locmem":
        yield "locmem"
        return
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        if os.environ.get("PLINTH_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} does not answer and PLINTH_REQUIRE_REDIS=1")
        pytest.skip(f"Redis at {REDIS_URL} does not answer")
    prefix = f"plinth-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    assert type(caches["default"]).__name__ == "RedisCache"  # the counters really live in Redis
    try:
        yield "redis"
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def test_simultaneous_guesses_from_one_address_reach_the_password_check_at_most_the_limit(
    ada: User, settings: Any, cache_backend: str
) -> None:
    settings.PLINTH_LOGIN_FAILURES_PER_USER = 10
    settings.PLINTH_LOGIN_FAILURES_PER_IP = 1000
    settings.PLINTH_LOGIN_ACCOUNT_CEILING = 1000
    checks, statuses = _race(settings, ["10.3.0.1"] * 20)
    assert checks == 10
    assert sorted(statuses) == [200] * 10 + [429] * 10


def test_simultaneous_guesses_from_twenty_addresses_reach_the_password_check_at_most_the_ceiling(
    ada: User, settings: Any, cache_backend: str
) -> None:
    settings.PLINTH_LOGIN_FAILURES_PER_USER = 10
    settings.PLINTH_LOGIN_ACCOUNT_CEILING = 10
    checks, statuses = _race(settings, [f"10.4.0.{i}" for i in range(20)])
    assert checks == 10
    assert sorted(statuses) == [200] * 10 + [429] * 10


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

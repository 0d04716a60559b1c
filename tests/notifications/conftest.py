"""Fixtures of the notification tests: no socket may leave the loopback interface (the guard
is on for every test here), invented names resolve only through `dns`, and loopback
servers that count connections or record webhook calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notifications.servers import ConnectionGuard, Counter, FakeDNS, HTTPReceiver


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> ConnectionGuard:
    return ConnectionGuard(monkeypatch)


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    return FakeDNS(monkeypatch)


@pytest.fixture
def counter() -> Iterator[Counter]:
    with Counter("127.0.0.1") as running:
        yield running


@pytest.fixture
def counter6() -> Iterator[Counter]:
    with Counter("::1") as running:
        yield running


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    with HTTPReceiver("127.0.0.1") as running:
        yield running

"""One reconciler pass at a time: the lease on its ReconcilerPass row (apps.core.leases),
and how the last pass's duration shows on the status page."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts.models import User
from apps.core import leases
from apps.core.models import ReconcilerPass
from apps.launches import tasks
from tests.conftest import client_for


@pytest.mark.django_db
def test_a_pass_that_finds_the_lease_held_skips() -> None:
    token = leases.try_acquire("sync_launches", 3.0)
    assert token is not None
    assert tasks.sync_launches() == {"skipped": 1}
    leases.release("sync_launches", token, started=0.0)
    assert tasks.sync_launches() == {"polled": 0, "ended": 0, "resubmitted": 0, "pruned": 0}
    row = ReconcilerPass.objects.get(name="sync_launches")
    assert row.skipped == 1 and not row.running and row.last_duration_seconds is not None


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_release_it() -> None:
    old = leases.try_acquire("sync_launches", 3.0, lease_seconds=60)
    assert old is not None
    ReconcilerPass.objects.filter(name="sync_launches").update(lease_until=timezone.now() - timedelta(seconds=1))
    new = leases.try_acquire("sync_launches", 3.0)
    assert new is not None and new != old
    leases.release("sync_launches", old, started=0.0)  # the crashed pass comes back late
    assert ReconcilerPass.objects.get(name="sync_launches").running


@pytest.mark.django_db(transaction=True)
def test_two_passes_started_at_once_run_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    inside = threading.Event()
    go_on = threading.Event()
    concurrent = []
    active = [0]
    lock = threading.Lock()

    def slow_pass() -> dict[str, int]:
        with lock:
            active[0] += 1
            concurrent.append(active[0])
        inside.set()
        go_on.wait(30)
        with lock:
            active[0] -= 1
        return {"polled": 0, "ended": 0, "resubmitted": 0}

    monkeypatch.setattr(tasks, "_sync_launches_pass", slow_pass)
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(tasks.sync_launches())
        finally:
            connection.close()

    first = threading.Thread(target=run)
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=run)
    second.start()
    second.join(30)  # the second pass does not wait for the first: it skips
    go_on.set()
    first.join(30)
    assert sorted(results, key=str) == sorted([{"skipped": 1}, {"polled": 0, "ended": 0, "resubmitted": 0}], key=str)
    assert concurrent == [1]


@pytest.mark.django_db
def test_the_status_page_says_how_long_the_last_pass_took_and_warns_when_slow(root: User) -> None:
    ReconcilerPass.objects.create(
        name="sync_launches", period_seconds=3.0, last_duration_seconds=1.25, last_finished_at=timezone.now()
    )
    body = client_for(root).get("/status/").content.decode()
    assert "last reconciler pass took 1.2 s (every 3 s" in body
    ReconcilerPass.objects.filter(name="sync_launches").update(last_duration_seconds=7.5)
    response = client_for(root).get("/status/")
    check = {c.name: c for c in response.context["checks"]}["reconciler"]
    assert not check.ok
    assert "took 7.5 s" in check.detail and "slower than its period" in check.detail
    ReconcilerPass.objects.filter(name="sync_launches").update(last_duration_seconds=0.5)
    aliases = "apps.registry.tasks.reconcile_aliases"
    ReconcilerPass.objects.create(name=aliases, period_seconds=60, last_duration_seconds=75)
    check = {c.name: c for c in client_for(root).get("/status/").context["checks"]}["reconciler"]
    assert not check.ok and f"{aliases} (75.0 s, every 60 s)" in check.detail


def test_every_beat_entry_expires_within_its_period() -> None:
    from django.conf import settings

    schedule: dict[str, dict[str, Any]] = settings.CELERY_BEAT_SCHEDULE
    for name, entry in schedule.items():
        assert 0 < entry["options"]["expire_seconds"] <= max(float(entry["schedule"]), 1), name


@pytest.mark.django_db
def test_other_beat_reconcilers_run_one_pass_at_a_time_too(settings: Any) -> None:
    from apps.core.tasks import prune_broker_messages

    settings.CELERY_BROKER_URL = "redis://not-used"  # the pass itself does nothing here
    name = "apps.core.tasks.prune_broker_messages"
    token = leases.try_acquire(name, 3600.0)
    assert token is not None
    assert prune_broker_messages.apply().get() is None  # skipped: a pass holds the lease
    assert ReconcilerPass.objects.get(name=name).skipped == 1
    leases.release(name, token, started=0.0)
    assert prune_broker_messages.apply().get() == 0  # ran
    assert ReconcilerPass.objects.get(name=name).last_duration_seconds is not None

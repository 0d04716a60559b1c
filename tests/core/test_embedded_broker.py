"""The embedded broker (kombu's SQLAlchemy transport on SQLite) under load: messages sent
by several producer processes while several consumer processes take them are each received
exactly once — none lost, none handed out twice, none read half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

PRODUCER = """
import json, os, sys
from kombu import Connection
url, options, first, count = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with Connection(url, transport_options=options) as conn:
    queue = conn.SimpleQueue("load")
    for n in range(first, first + count):
        queue.put({"id": n})
"""

CONSUMER = """
import json, os, queue as stdlib_queue, sys
from pathlib import Path
from kombu import Connection
url, options, out, done = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
with Connection(url, transport_options=options) as conn:
    queue = conn.SimpleQueue("load")
    while True:
        try:
            message = queue.get(timeout=1)
        except stdlib_queue.Empty:
            if done.exists():
                break
            continue
        n = message.payload["id"]
        try:
            os.close(os.open(out / str(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            (out / f"dup-{n}-{os.getpid()}").touch()
        message.ack()
"""


def test_thousands_of_messages_are_each_received_exactly_once(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    options = json.dumps({"connect_args": {"timeout": 30}})
    assert settings.CELERY_BROKER_URL.startswith(("sqla+sqlite", "redis")), "the embedded default is this transport"
    received, done = tmp_path / "received", tmp_path / "producers-done"
    received.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # Create the tables first, so producers and consumers start on a ready store.
    subprocess.run([sys.executable, "-c", PRODUCER, url, options, "0", "0"], check=True, env=env, timeout=60)
    consumers = [
        subprocess.Popen([sys.executable, "-c", CONSUMER, url, options, str(received), str(done)], env=env)
        for _ in range(3)
    ]
    producers = [
        subprocess.Popen([sys.executable, "-c", PRODUCER, url, options, str(first), "1000"], env=env)
        for first in (0, 1000, 2000)
    ]
    try:
        assert [p.wait(timeout=300) for p in producers] == [0, 0, 0]
        done.touch()
        assert [c.wait(timeout=300) for c in consumers] == [0, 0, 0]
    finally:
        for proc in producers + consumers:
            if proc.poll() is None:
                proc.kill()
    names = {p.name for p in received.iterdir()}
    duplicates = sorted(n for n in names if n.startswith("dup-"))
    assert duplicates == []
    assert names == {str(n) for n in range(3000)}


def test_messages_already_handed_out_are_pruned_and_waiting_ones_kept(tmp_path: Path, settings: object) -> None:
    from kombu import Connection

    from apps.core.tasks import prune_broker_messages

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    settings.CELERY_BROKER_URL = url  # type: ignore[attr-defined]
    with Connection(url) as conn:
        queue = conn.SimpleQueue("prune")
        for n in range(5):
            queue.put({"id": n})
        for _ in range(3):
            queue.get(timeout=5).ack()
        assert prune_broker_messages() == 3
        assert prune_broker_messages() == 0
        assert sorted(queue.get(timeout=5).payload["id"] for _ in range(2)) == [3, 4]

"""SQLite connections for the embedded mode's files, which several processes share.

Django's own database gets its PRAGMAs from `OPTIONS["init_command"]` (settings). The
embedded Celery broker (kombu's SQLAlchemy transport on a SQLite file) has no such hook, but
SQLAlchemy passes `connect_args` to `sqlite3.connect`, whose `factory` builds the connection:
this one switches the file to WAL, so the web process publishing a task and the worker
claiming one do not block each other's reads."""

from __future__ import annotations

import sqlite3
from typing import Any


class WalConnection(sqlite3.Connection):
    """A sqlite3 connection in WAL mode with `synchronous=NORMAL` (safe in WAL: a power cut
    may lose the last commits, never corrupt the file). WAL is a property of the file, so
    this is a no-op after the first connection; the busy timeout is `connect`'s `timeout`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")

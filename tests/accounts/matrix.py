"""The accounts routes added with the time zone setting, in the vocabulary of
tests/access/matrix_vocab.py: everyone signed in sets their own zone (no object: an
outsider gets the same redirect)."""

from __future__ import annotations

import pytest

from tests.access.matrix_vocab import NONE, Op, Route, World, route

MATRIX: dict[str, Route] = {
    "account-time-zone": route(NONE, Op("POST", "vic", ok=302, outsider=302, body={"time_zone": "Europe/Paris"})),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to add: the route is about the caller's own account."""

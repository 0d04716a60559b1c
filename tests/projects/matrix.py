"""The projects routes added by the experiment-ownership hardening, in the vocabulary of
tests/access/matrix_vocab.py: attaching an existing MLflow experiment is for platform
admins only (leads and members of the team get 403, outsiders 404). demo/demo is linked to
experiment "1" in the matrix world, so attaching "1" again is the idempotent no-op that
needs no MLflow."""

from __future__ import annotations

import pytest

from tests.access.matrix_vocab import DEMO_PROJECT, Op, Route, World, route

MATRIX: dict[str, Route] = {
    "projects:attach-experiment": route(
        DEMO_PROJECT, Op("POST", "root", ok=302, too_weak="lin", body={"experiment": "1"})
    ),
    "api:project-attach-experiment": route(
        lambda w: {"pk": w.project.pk}, Op("POST", "root", too_weak="lin", body={"experiment": "1"})
    ),
    # Restoring a deleted experiment (members and up) asks MLflow, which is down in the
    # matrix world: 503. Replacing it is a lead's; demo/demo's experiment is not deleted: 409.
    "projects:restore-experiment": route(DEMO_PROJECT, Op("POST", "ada", ok=503, too_weak="vic")),
    "projects:replace-experiment": route(
        DEMO_PROJECT, Op("POST", "lin", ok=409, too_weak="ada", body={"name": "demo/new"})
    ),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to add: the base world's linked demo/demo is what these routes need."""

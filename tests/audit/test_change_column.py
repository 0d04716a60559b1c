"""The audit log's "Change" column reads as a before → after diff of the fields that
changed, never as Python dict text; the API keeps the JSON objects."""

from __future__ import annotations

import re

import pytest

from apps.accounts import services
from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.core.templatetags.wording import MAX_ROWS, MAX_VALUE_CHARS, MORE_FIELDS, change_diff, change_rows
from tests.conftest import api_for, client_for
from tests.launches.conftest import fake_mlflow, linked_project, make_template  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def change_cells(page: str) -> list[str]:
    return re.findall(r'<td class="change">(.*?)</td>', page, re.S)


def test_a_changed_field_reads_as_before_arrow_after(root: User, team: Team) -> None:
    budget = team.gpu_budget
    services.update_team(root, team, gpu_budget=budget + 2)
    event = AuditEvent.objects.get(verb="team.updated")
    assert event.before and event.after  # the service recorded both sides

    cells = change_cells(client_for(root).get("/audit/").content.decode())
    shown = next(cell for cell in cells if "gpu_budget" in cell)
    plain = re.sub(r"<[^>]+>", "", shown)
    assert re.search(rf"gpu_budget:\s*{budget}\s*→\s*{budget + 2}", plain), plain
    assert "{" not in plain and "'" not in plain, "no dict text on the page"
    # Fields that did not change are not listed.
    for key, value in event.before.items():
        if event.after.get(key) == value:
            assert f"{key}:" not in plain

    api_event = next(e for e in api_for(root).get("/api/v1/audit/").json()["results"] if e["verb"] == "team.updated")
    assert api_event["before"]["gpu_budget"] == budget and api_event["after"]["gpu_budget"] == budget + 2


def test_a_created_thing_shows_only_its_new_values(root: User, lin: User, team: Team) -> None:
    services.add_member(lin, team, username="root", role="viewer")
    event = AuditEvent.objects.get(verb="team.member_added")
    cells = change_cells(client_for(root).get("/audit/").content.decode())
    plain = [re.sub(r"<[^>]+>", "", c) for c in cells]
    shown = next(p for p in plain if "viewer" in p)
    assert event.before is None and event.after == {"user": "root", "role": "viewer"}
    assert "→" not in shown, "nothing before: no arrow"
    assert re.search(r"user:\s*root", shown) and re.search(r"role:\s*viewer", shown), shown
    assert "{" not in shown


# --- nested values: dotted fields, words, never JSON ------------------------------------------
PARAMETERS = {
    "lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
    "batch": {"type": "choice", "choices": [16, 32, 64], "default": 32},
}


def plain_change(root: User, verb: str) -> str:
    """The Change cell of the newest `verb` event on the audit page, as text."""
    page = client_for(root).get("/audit/", {"verb": verb}).content.decode()
    [cell] = change_cells(page)[:1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", cell))


def assert_no_data_structure(plain: str) -> None:
    for mark in ("{", "}", "[", "]", '""', "'"):
        assert mark not in plain, f"{mark} in {plain!r}"


@pytest.mark.usefixtures("linked_project", "fake_mlflow")
def test_a_created_launch_shows_parameters_and_resources_as_dotted_fields(root: User, ada: User, team: Team) -> None:
    make_template(team, "train", ["python", "train.py"], parameters=PARAMETERS)
    made = api_for(ada).post(
        "/api/v1/launches/",
        {"project": "demo/demo", "template": "train", "parameters": {"lr": 0.2, "batch": 64}},
        format="json",
    )
    assert made.status_code == 201, made.json()
    after = AuditEvent.objects.get(verb="launch.created").after
    assert after is not None and isinstance(after["parameters"], dict) and isinstance(after["resources"], dict)

    plain = plain_change(root, "launch.created")
    assert_no_data_structure(plain)
    assert re.search(r"parameters\.lr:\s*0\.2", plain) and re.search(r"parameters\.batch:\s*64", plain), plain
    for key, value in after["resources"].items():
        if not isinstance(value, dict | list):
            assert f"resources.{key}:" in plain, plain
    assert "template: train" in plain and "→" not in plain, plain


@pytest.mark.usefixtures("linked_project", "fake_mlflow")
def test_a_created_sweep_shows_empty_values_as_words(root: User, ada: User, team: Team) -> None:
    make_template(team, "train", ["python", "train.py"], parameters=PARAMETERS)
    made = api_for(ada).post(
        "/api/v1/sweeps/",
        {
            "project": "demo/demo",
            "template": "train",
            "strategy": "grid",
            "space": {"lr": [0.001, 0.01], "batch": [16, 32]},
            "max_trials": 4,
            "parallelism": 2,
            "metric": "accuracy",
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    after = AuditEvent.objects.get(verb="sweep.created").after
    assert after is not None and not after["early_stopping"] and after["note"] == ""  # empty values recorded

    plain = plain_change(root, "sweep.created")
    assert_no_data_structure(plain)
    assert re.search(r"early_stopping:\s*none", plain) and re.search(r"note:\s*—", plain), plain
    assert re.search(r"strategy:\s*grid", plain) and re.search(r"trials:\s*4", plain), plain


def test_an_update_shows_before_and_after_per_changed_leaf() -> None:
    before = {
        "parameters": {"lr": 0.1, "batch": 32},
        "resources": {"cpu": "1", "memory": "2Gi"},
        "pod_defaults": {},
        "state_reason": "",
        "tags": ["a", "b"],
    }
    after = {
        "parameters": {"lr": 0.2, "batch": 32},
        "resources": {"cpu": "2", "memory": "2Gi"},
        "pod_defaults": {"node_selector": {"gpu": "a100"}},
        "state_reason": "cancelled by lin",
        "tags": ["a", "c"],
    }
    rows = {field: (old, new) for field, old, new in change_rows(before, after)}
    assert rows == {
        "parameters.lr": ("0.1", "0.2"),
        "resources.cpu": ("1", "2"),
        "pod_defaults.node_selector.gpu": ("", "a100"),
        "state_reason": ("—", "cancelled by lin"),
        "tags": ("a, b", "a, c"),
    }
    html = str(change_diff(AuditEvent(before=before, after=after)))
    plain = re.sub(r"<[^>]+>", "", html)
    assert_no_data_structure(plain)
    assert re.search(r"parameters\.lr:\s*0\.1\s*→\s*0\.2", plain), plain
    assert "batch" not in plain and "memory" not in plain, "unchanged leaves are not listed"


def test_a_huge_change_is_cut_short() -> None:
    after = {"log": "x" * 5000, **{f"field{i:03d}": i for i in range(200)}, "rows": [{"a": 1, "b": [2, 3]}] * 3}
    rows = change_rows(None, after)
    assert len(rows) == MAX_ROWS and rows[-1][0] == MORE_FIELDS and rows[-1][2].startswith("…")
    assert "more fields" in rows[-1][2]
    html = str(change_diff(AuditEvent(before=None, after=after)))
    assert '<li><span class="muted">… and ' in html and '<ins class="after">… and' not in html
    assert rows[0] == ("log", "", "x" * (MAX_VALUE_CHARS - 1) + "…")
    assert all(len(new) <= MAX_VALUE_CHARS for _field, _old, new in rows)
    assert change_rows({"rows": []}, {"rows": [{"a": 1, "b": [2, 3]}]}) == [("rows", "none", "a 1; b 2, 3")]

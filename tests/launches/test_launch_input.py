"""Bad launch input is refused with a clear answer and creates nothing: no launch row, no
audit event, no MLflow run. Parameters are data, never shell: metacharacters reach the
job verbatim as one argument."""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.compute.base import GpuDevice
from apps.launches import tasks
from apps.launches.argv import build_argv
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import TERMINAL, Launch, Status, Template
from apps.launches.services import create_template
from apps.projects.models import ExperimentState, Project
from apps.projects.services import link_experiment
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for, client_for
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db

ECHO_COMMAND = ["python", "-c", "import sys; print(sys.argv[1:])", "{msg}"]
NASTY = ["; rm -rf /", "$(whoami)", "`id` && echo pwned | cat > /tmp/x", 'it\'s "quoted" \\ back', "a b\tc"]


@pytest.fixture
def digits(root: User) -> Template:
    return create_template(root, None, **SKLEARN_DIGITS)


def fake_gpus(count: int) -> Callable[[], list[GpuDevice]]:
    return lambda: [GpuDevice(node="host", index=i, model="Fake GPU") for i in range(count)]


def launch_body(**changes: Any) -> dict[str, Any]:
    return {"project": "demo/demo", "template": "sklearn-digits", **changes}


def runs_in(url: str, experiment_id: str) -> set[str]:
    runs, _ = MlflowGateway(url).search_runs([experiment_id])
    return {run["info"]["run_id"] for run in runs}


# (id, who, body changes, status, a field the 400 must name or a phrase the message must hold)
BAD_INPUT: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("unknown-template", "ada", {"template": "no-such-template"}, 400, "template"),
    ("template-id-of-nothing", "ada", {"template": "999999"}, 400, "template"),
    ("epochs-text", "ada", {"parameters": {"epochs": "abc"}}, 400, "parameters.epochs"),
    ("epochs-numeric-text", "ada", {"parameters": {"epochs": "30"}}, 400, "parameters.epochs"),
    ("epochs-bool", "ada", {"parameters": {"epochs": True}}, 400, "parameters.epochs"),
    ("epochs-float", "ada", {"parameters": {"epochs": 30.5}}, 400, "parameters.epochs"),
    ("learning-rate-text", "ada", {"parameters": {"learning_rate": "0.1"}}, 400, "parameters.learning_rate"),
    ("learning-rate-bool", "ada", {"parameters": {"learning_rate": False}}, 400, "parameters.learning_rate"),
    ("register-model-number", "ada", {"parameters": {"register_model": 3}}, 400, "parameters.register_model"),
    ("epochs-below-min", "ada", {"parameters": {"epochs": 19}}, 400, "parameters.epochs"),
    ("epochs-above-max", "ada", {"parameters": {"epochs": 501}}, 400, "parameters.epochs"),
    ("learning-rate-above-max", "ada", {"parameters": {"learning_rate": 1.5}}, 400, "parameters.learning_rate"),
    ("alpha-negative", "ada", {"parameters": {"alpha": -0.1}}, 400, "parameters.alpha"),
    ("unknown-parameter", "ada", {"parameters": {"epochz": 30}}, 400, "parameters.epochz"),
    ("parameters-not-an-object", "ada", {"parameters": [30]}, 400, "parameters"),
    ("gpus-above-template-max", "ada", {"resources": {"gpus": 2}}, 400, "resources.gpus"),
    ("gpus-negative", "ada", {"resources": {"gpus": -1}}, 400, "resources.gpus"),
    ("gpus-text", "ada", {"resources": {"gpus": "one"}}, 400, "resources.gpus"),
    ("cpu-lots", "ada", {"resources": {"cpu": "lots"}}, 400, "resources.cpu"),
    ("cpu-zero", "ada", {"resources": {"cpu": "0"}}, 400, "resources.cpu"),
    ("cpu-above-template-max", "ada", {"resources": {"cpu": "5"}}, 400, "resources.cpu"),
    ("memory-negative", "ada", {"resources": {"memory": "-1Gi"}}, 400, "resources.memory"),
    ("memory-above-template-max", "ada", {"resources": {"memory": "9Gi"}}, 400, "resources.memory"),
    ("unknown-resource", "ada", {"resources": {"tpus": 1}}, 400, "resources.tpus"),
    ("resources-not-an-object", "ada", {"resources": "big"}, 400, "resources"),
    ("project-not-named", "ada", {"project": "demo"}, 400, "project"),
    ("viewer", "vic", {}, 403, "detail"),
    ("outsider-by-slug", "omar", {}, 404, "detail"),
    ("unknown-project", "ada", {"project": "demo/nope"}, 404, "detail"),
]


@pytest.mark.mlflow
@pytest.mark.parametrize(
    ("who", "changes", "status", "where"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_launch_input_is_refused_and_creates_nothing_not_even_an_mlflow_run(
    people: dict[str, User],
    project: Project,
    digits: Template,
    mlflow_up: str,
    who: str,
    changes: dict[str, Any],
    status: int,
    where: str,
) -> None:
    linked = link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED
    runs_before = runs_in(mlflow_up, linked.mlflow_experiment_id)

    response = api_for(people[who]).post("/api/v1/launches/", launch_body(**changes), format="json")

    assert response.status_code == status, response.content
    body = response.json()
    assert where in body, body
    assert body[where] and all(isinstance(text, str) and text for text in body[where])
    assert not Launch.objects.exists()
    assert not AuditEvent.objects.filter(verb="launch.created").exists()
    assert runs_in(mlflow_up, linked.mlflow_experiment_id) == runs_before


@pytest.mark.mlflow
def test_a_valid_launch_creates_exactly_one_row_and_one_mlflow_run(
    ada: User, project: Project, digits: Template, mlflow_up: str
) -> None:
    """The control for the test above: the same checks see a real launch."""
    linked = link_experiment(project.pk)
    assert linked is not None
    runs_before = runs_in(mlflow_up, linked.mlflow_experiment_id)

    response = api_for(ada).post("/api/v1/launches/", launch_body(parameters={"epochs": 20}), format="json")

    assert response.status_code == 201, response.json()
    launch = Launch.objects.get()
    assert launch.status == Status.QUEUED
    assert launch.parameters["epochs"] == 20 and launch.parameters["learning_rate"] == 0.01  # defaults filled in
    assert runs_in(mlflow_up, linked.mlflow_experiment_id) == runs_before | {launch.mlflow_run_id}
    assert AuditEvent.objects.filter(verb="launch.created").count() == 1


def test_an_outsider_gets_a_404_for_another_teams_project_by_id_too(
    omar: User, ada: User, project: Project, digits: Template, fake_mlflow: FakeMlflow
) -> None:
    response = api_for(omar).post(
        "/api/v1/launches/", launch_body(project=str(project.pk), template=str(digits.pk)), format="json"
    )
    assert response.status_code == 404
    assert "demo" not in response.json()["detail"].lower()
    assert not Launch.objects.exists()
    assert not fake_mlflow.runs


def test_a_template_of_another_team_is_unknown_here(
    ada: User, project: Project, other_team: Team, fake_mlflow: FakeMlflow
) -> None:
    theirs = make_template(other_team, "theirs", ["python", "train.py"])
    response = api_for(ada).post("/api/v1/launches/", launch_body(template=str(theirs.pk)), format="json")
    assert response.status_code == 400
    assert "template" in response.json()
    assert not Launch.objects.exists()


@pytest.mark.parametrize(
    "change",
    [{"backends": ["kubernetes"]}, {"is_active": False}],
    ids=["kubernetes-only-template-on-a-local-project", "retired-template"],
)
def test_a_template_the_project_cannot_use_is_a_400_on_the_template_field(
    ada: User, project: Project, team: Team, fake_mlflow: FakeMlflow, change: dict[str, Any]
) -> None:
    make_template(team, "special", ["python", "train.py"], **change)
    response = api_for(ada).post("/api/v1/launches/", launch_body(template="special"), format="json")
    assert response.status_code == 400
    assert response.json()["template"]
    assert not Launch.objects.exists()
    assert not fake_mlflow.runs


def test_every_bad_field_is_reported_at_once(ada: User, project: Project, digits: Template) -> None:
    response = api_for(ada).post(
        "/api/v1/launches/",
        launch_body(parameters={"epochs": "abc", "alpha": 7, "bogus": 1}),
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert {"parameters.epochs", "parameters.alpha", "parameters.bogus"} <= set(body)
    assert "at most 1.0" in body["parameters.alpha"][0]


def test_more_gpus_than_the_project_quota_is_a_409_with_the_numbers(
    ada: User,
    project: Project,
    team: Team,
    monkeypatch: pytest.MonkeyPatch,
    fake_mlflow: FakeMlflow,
    linked_project: Project,
) -> None:
    monkeypatch.setattr("apps.compute.local.nvml_gpus", fake_gpus(4))  # the host has GPUs: only the quota limits
    big = make_template(team, "big", ["python", "train.py"], max_resources={"gpus": 4})
    Launch.objects.create(project=project, template=big, created_by=ada, backend="local", gpus=1, status=Status.RUNNING)

    response = api_for(ada).post("/api/v1/launches/", launch_body(template="big", resources={"gpus": 2}), format="json")

    assert response.status_code == 409, response.json()
    detail = response.json()["detail"]
    assert "demo/demo" in detail and "quota of 2" in detail and "hold 1" in detail and "2 more" in detail
    assert Launch.objects.count() == 1
    assert not fake_mlflow.runs
    # one GPU still fits, and ended launches hold none
    response = api_for(ada).post("/api/v1/launches/", launch_body(template="big", resources={"gpus": 1}), format="json")
    assert response.status_code == 201, response.json()
    Launch.objects.filter(status=Status.RUNNING).update(status=Status.SUCCEEDED)
    response = api_for(ada).post("/api/v1/launches/", launch_body(template="big", resources={"gpus": 1}), format="json")
    assert response.status_code == 201, response.json()


def test_gpus_on_the_local_backend_without_nvml_gpus_is_a_409_that_says_why(
    ada: User, project: Project, digits: Template, monkeypatch: pytest.MonkeyPatch, fake_mlflow: FakeMlflow
) -> None:
    monkeypatch.setattr("apps.compute.local.nvml_gpus", fake_gpus(0))
    response = api_for(ada).post("/api/v1/launches/", launch_body(resources={"gpus": 1}), format="json")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "1 GPUs requested" in detail and "has 0" in detail and "NVML" in detail
    assert "Kubernetes" in detail  # what to do instead
    assert not Launch.objects.exists()
    assert not fake_mlflow.runs


@pytest.mark.parametrize("linked", [False, True], ids=["experiment-not-yet-linked", "experiment-linked"])
def test_mlflow_down_makes_a_launch_a_503_with_a_message_and_creates_nothing(
    ada: User, project: Project, digits: Template, linked: bool
) -> None:
    if linked:
        Project.objects.filter(pk=project.pk).update(mlflow_state=ExperimentState.LINKED, mlflow_experiment_id="3")
    response = api_for(ada).post("/api/v1/launches/", launch_body(), format="json")
    assert response.status_code == 503
    assert "MLflow" in response.json()["detail"]
    assert not Launch.objects.exists()
    assert not AuditEvent.objects.filter(verb="launch.created").exists()


def test_the_launch_page_shows_bad_input_next_to_its_fields_and_creates_nothing(
    ada: User, project: Project, digits: Template, fake_mlflow: FakeMlflow
) -> None:
    form = {
        "template": "sklearn-digits",
        "project": str(project.pk),
        "param_epochs": "30",
        "param_learning_rate": "0.01",
        "param_alpha": "0.0001",
        "param_seed": "0",
        "param_sleep_per_epoch": "0",
        "cpu": "lots",
        "memory": "1Gi",
        "gpus": "0",
    }
    response = client_for(ada).post("/launches/new/", form)
    assert response.status_code == 400
    assert "is not a quantity" in response.content.decode()
    response = client_for(ada).post("/launches/new/", {**form, "cpu": "1", "param_epochs": "5"})
    assert response.status_code == 400
    assert not Launch.objects.exists()
    assert not fake_mlflow.runs


def test_the_launch_page_says_mlflow_is_down_with_a_503(ada: User, project: Project, digits: Template) -> None:
    form = {
        "template": "sklearn-digits",
        "project": str(project.pk),
        "param_epochs": "30",
        "param_learning_rate": "0.01",
        "param_alpha": "0.0001",
        "param_seed": "0",
        "param_sleep_per_epoch": "0",
        "cpu": "1",
        "memory": "1Gi",
        "gpus": "0",
    }
    response = client_for(ada).post("/launches/new/", form)
    assert response.status_code == 503
    assert "MLflow" in response.content.decode()
    assert not Launch.objects.exists()


# --- parameters are data, never shell ---------------------------------------------------
@pytest.mark.parametrize("value", NASTY)
def test_build_argv_keeps_shell_metacharacters_as_one_verbatim_argument(value: str) -> None:
    argv = build_argv(ECHO_COMMAND, {"msg": value})
    assert argv == ["python", "-c", "import sys; print(sys.argv[1:])", value]
    assert build_argv(["train", "--note={msg}"], {"msg": value}) == ["train", f"--note={value}"]
    assert build_argv(["train"], {"msg": value}) == ["train", f"--msg={value}"]


def test_shell_metacharacters_are_accepted_as_data_and_reach_the_local_job_verbatim(
    ada: User, team: Team, project: Project, data_dir: Path, fake_mlflow: FakeMlflow, linked_project: Project
) -> None:
    marker = data_dir / "pwned"
    value = f"; touch {marker}; $(touch {marker}) `touch {marker}` | tee {marker} && whoami > {marker}"
    make_template(team, "echo", ECHO_COMMAND, parameters={"msg": {"type": "str", "default": ""}}, backends=["local"])

    response = api_for(ada).post(
        "/api/v1/launches/", launch_body(template="echo", parameters={"msg": value}), format="json"
    )
    assert response.status_code == 201, response.json()
    launch = Launch.objects.get()
    assert launch.parameters == {"msg": value}
    assert tasks.submit_launch(launch.pk) == "submitted"
    deadline = time.monotonic() + 30
    while launch.status not in TERMINAL and time.monotonic() < deadline:
        tasks.sync_launches()
        launch.refresh_from_db()
        time.sleep(0.1)

    assert launch.status == Status.SUCCEEDED, launch.status_reason
    logs = api_for(ada).get(f"/api/v1/launches/{launch.pk}/logs/")
    assert logs.status_code == 200
    assert ast.literal_eval(logs.content.decode().strip()) == [value]  # one argument, exactly as typed
    assert not marker.exists()  # nothing was run by a shell

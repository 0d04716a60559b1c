"""What a job on the local backend can see, run for real: the backend starts the command
through its detached runner, exactly as a worker does. The worker's environment holds the
portal's secrets; a job that prints its environment must show none of them, and must run in
a folder of its own under the data directory. In production the backend is off unless an
operator turns it on, and a launch on it is refused with a 409 before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.accounts.models import Team, User
from apps.compute.base import Observation
from apps.compute.local import LocalBackend
from apps.launches import tasks
from apps.launches.models import Launch, Status, Sweep, Template
from apps.projects.models import Project
from tests.conftest import api_for
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db

WORKER_SECRETS = {
    "PLINTH_SECRET_KEY": "fake-django-secret-key-4b1d",
    "DATABASE_URL": "postgres://plinth:fake-db-password-77a1@db:5432/plinth",
    "CELERY_BROKER_URL": "redis://:fake-redis-password-9c3e@redis:6379/0",
    "MLFLOW_TRACKING_USERNAME": "plinth-portal-account",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-e5d2",
    "PLINTH_MLFLOW_ADMIN_PASSWORD": "fake-mlflow-admin-password-03aa",
    "PLINTH_OIDC_CLIENT_SECRET": "fake-oidc-client-secret-6b6b",
    "PLINTH_OIDC_RP_CLIENT_SECRET": "fake-oidc-rp-client-secret-a9a9",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-access-key-8e8e",
    "PYTHONPATH": "/fake/portal/source/tree",
}

# Prints the whole environment (one NAME=value a line), then where it runs, then writes a
# file with a relative path.
PRINT_ENV = (
    "import os, tempfile\n"
    "for name, value in sorted(os.environ.items()): print(f'ENV {name}={value}')\n"
    "print('CWD', os.getcwd())\n"
    "print('TEMPDIR', tempfile.gettempdir())\n"
    "open('written-by-the-job.txt', 'w').write('hi')\n"
)


def run_locally(launch: Launch, seconds: float = 60) -> Observation:
    """Submit `launch` to a real LocalBackend and poll it until it ends."""
    backend = LocalBackend(max_concurrent=2)
    backend.submit(launch)
    launch.refresh_from_db()
    Launch.objects.filter(pk=launch.pk).update(status=Status.PENDING)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = backend.poll([launch])[launch.pk]
        if seen.state not in ("pending", "running"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"launch {launch.pk} did not end within {seconds} s")


def local_launch(project: Project, user: User, template: Template, **fields: Any) -> Launch:
    values: dict[str, Any] = {
        "project": project,
        "template": template,
        "created_by": user,
        "parameters": {},
        "resources": {"cpu": "1", "memory": "1Gi", "gpus": 0},
        "backend": "local",
        "mlflow_run_id": "0123456789abcdef0123456789abcdef",
        "mlflow_experiment_id": "42",
        "max_runtime_seconds": 120,
    }
    values.update(fields)
    return Launch.objects.create(**values)


def env_lines(log: str) -> dict[str, str]:
    return dict(line[4:].split("=", 1) for line in log.splitlines() if line.startswith("ENV "))


@pytest.fixture
def worker_with_secrets(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Oslo")
    monkeypatch.setenv("HOME", "/home/the-worker")
    monkeypatch.setenv("TMPDIR", "/tmp/the-worker")
    settings.MLFLOW_TRACKING_USERNAME = WORKER_SECRETS["MLFLOW_TRACKING_USERNAME"]
    settings.MLFLOW_TRACKING_PASSWORD = WORKER_SECRETS["MLFLOW_TRACKING_PASSWORD"]
    # The portal's tracking URI with its account inline: the job must get the address only.
    settings.MLFLOW_TRACKING_URI = (
        f"http://{WORKER_SECRETS['MLFLOW_TRACKING_USERNAME']}:{WORKER_SECRETS['MLFLOW_TRACKING_PASSWORD']}"
        "@127.0.0.1:5999"
    )


def test_a_job_that_prints_its_environment_shows_its_mlflow_run_and_no_worker_secret(
    data_dir: Path, worker_with_secrets: None, team: Team, project: Project, ada: User
) -> None:
    template = make_template(team, "print-env", ["python", "-c", PRINT_ENV, "--seed={seed}"])
    launch = local_launch(project, ada, template, parameters={"seed": 7})

    seen = run_locally(launch)

    log = LocalBackend().logs(launch, 500)
    assert seen.state == "succeeded", f"{seen.reason}\n{log}"
    for name, value in WORKER_SECRETS.items():
        assert value not in log, f"the value of {name} reached the job"
    env = env_lines(log)
    assert env, log
    assert not set(WORKER_SECRETS) & set(env)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert env["MLFLOW_RUN_ID"] == "0123456789abcdef0123456789abcdef"
    assert env["MLFLOW_EXPERIMENT_ID"] == "42"
    assert env["PLINTH_PARAM_SEED"] == "7"
    assert (env["LC_ALL"], env["TZ"], env["PYTHONUNBUFFERED"]) == ("C.UTF-8", "Europe/Oslo", "1")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    # Everything it was given is on the allow-list, whatever else the worker had.
    allowed = {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES"}
    allowed |= {"MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "PLINTH_LAUNCH_ID", "PLINTH_PROJECT"}
    allowed |= {"VIRTUAL_ENV", "PLINTH_PARAM_SEED"}
    unexpected = {name for name in env if name not in allowed and not name.startswith("LC_")}
    assert not unexpected, f"not on the allow-list: {sorted(unexpected)}"


def test_a_job_runs_in_its_own_folder_under_the_data_dir_with_its_own_home_and_tmp(
    data_dir: Path, worker_with_secrets: None, team: Team, project: Project, ada: User
) -> None:
    template = make_template(team, "print-env", ["python", "-c", PRINT_ENV])
    launch = local_launch(project, ada, template)

    seen = run_locally(launch)

    log = LocalBackend().logs(launch, 500)
    assert seen.state == "succeeded", f"{seen.reason}\n{log}"
    work = (data_dir / "launches" / str(launch.pk) / "work").resolve()
    cwd = next(line.split(" ", 1)[1] for line in log.splitlines() if line.startswith("CWD "))
    tempdir = next(line.split(" ", 1)[1] for line in log.splitlines() if line.startswith("TEMPDIR "))
    assert Path(cwd).resolve() == work
    env = env_lines(log)
    assert Path(env["HOME"]).resolve().parent == work and Path(env["HOME"]).is_dir()
    assert Path(env["TMPDIR"]).resolve().parent == work
    assert Path(tempdir).resolve() == Path(env["TMPDIR"]).resolve()
    assert (work / "written-by-the-job.txt").read_text() == "hi"
    assert not (Path(django_settings.BASE_DIR) / "written-by-the-job.txt").exists()


def test_the_demo_script_named_relative_to_the_portal_tree_still_runs(
    data_dir: Path, team: Team, project: Project, ada: User
) -> None:
    # The demo template names its script relative to the portal's tree (the image's WORKDIR
    # on Kubernetes); `--help` runs it without MLflow.
    template = make_template(team, "digits-help", ["python", "apps/launches/examples/sklearn_digits.py", "--help"])
    launch = local_launch(project, ada, template)

    seen = run_locally(launch)

    log = LocalBackend().logs(launch, 100)
    assert seen.state == "succeeded", f"{seen.reason}\n{log}"
    assert "--epochs" in log


def test_a_launch_on_a_disabled_local_backend_is_refused_with_409_and_creates_nothing(
    settings: Any, data_dir: Path, fake_mlflow: FakeMlflow, linked_project: Project, team: Team, ada: User
) -> None:
    settings.PLINTH_LOCAL_BACKEND_ENABLED = False
    make_template(team, "hello", ["python", "-c", "print('hello')"])

    response = api_for(ada).post("/api/v1/launches/", {"project": "demo/demo", "template": "hello"}, format="json")

    assert response.status_code == 409, response.content
    assert "local backend is disabled" in response.json()["detail"]
    assert not Launch.objects.exists()
    assert fake_mlflow.runs == {} and fake_mlflow.deleted == []


def test_a_sweep_on_a_disabled_local_backend_is_refused_with_409(
    settings: Any, data_dir: Path, fake_mlflow: FakeMlflow, linked_project: Project, team: Team, ada: User
) -> None:
    settings.PLINTH_LOCAL_BACKEND_ENABLED = False
    make_template(team, "hello", ["python", "-c", "print('hello')"], parameters={"x": {"type": "int", "default": 1}})

    response = api_for(ada).post(
        "/api/v1/sweeps/",
        {
            "project": "demo/demo",
            "template": "hello",
            "strategy": "grid",
            "space": {"x": [1, 2]},
            "max_trials": 2,
            "parallelism": 1,
        },
        format="json",
    )

    assert response.status_code == 409, response.content
    assert "local backend is disabled" in response.json()["detail"]
    assert not Launch.objects.exists() and not Sweep.objects.exists()


def test_a_queued_local_launch_fails_with_the_reason_once_the_backend_is_disabled(
    settings: Any, data_dir: Path, fake_mlflow: FakeMlflow, eager_tasks: None, project: Project, team: Team, ada: User
) -> None:
    template = make_template(team, "hello", ["python", "-c", "print('hello')"])
    launch = local_launch(project, ada, template, mlflow_run_id=fake_mlflow.create_run("42", "hello"))
    settings.PLINTH_LOCAL_BACKEND_ENABLED = False

    assert tasks.submit_launch.run(launch.pk) == "rejected"

    launch.refresh_from_db()
    assert launch.status == Status.FAILED
    assert "local backend is disabled" in launch.status_reason
    assert not (data_dir / "launches" / str(launch.pk) / "pid").exists()
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "FAILED"


def _setting_in(env_extra: dict[str, str], tmp_path: Path, name: str = "PLINTH_LOCAL_BACKEND_ENABLED") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "DJANGO_"))}
    env.update({"PLINTH_SECRET_KEY": "a-real-secret-" + "k" * 50, "PLINTH_DATA_DIR": str(tmp_path), **env_extra})
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_the_local_backend_is_off_in_production_unless_an_operator_turns_it_on(tmp_path: Path) -> None:
    assert _setting_in({"PLINTH_ENV": "development"}, tmp_path) == "True"
    assert _setting_in({"PLINTH_ENV": "production"}, tmp_path) == "False"
    assert _setting_in({"PLINTH_ENV": "production", "PLINTH_LOCAL_BACKEND_ENABLED": "true"}, tmp_path) == "True"


def test_new_projects_default_to_kubernetes_in_production(tmp_path: Path) -> None:
    name = "PLINTH_DEFAULT_BACKEND"
    assert _setting_in({"PLINTH_ENV": "development"}, tmp_path, name) == "local"
    assert _setting_in({"PLINTH_ENV": "production"}, tmp_path, name) == "kubernetes"
    assert _setting_in({"PLINTH_ENV": "production", name: "local"}, tmp_path, name) == "local"

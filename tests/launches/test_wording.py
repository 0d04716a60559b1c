"""Launch pages say one word per state: a launch ended by a signal shows the signal by
name ("cancelled (SIGTERM)", never "exit code -15"), a sweep's trials carry the name they
have everywhere else, and the GPU field says why it is 0 on a host without GPUs."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.compute.base import GpuDevice
from apps.launches.models import Launch, Status, Sweep
from apps.launches.services import create_launch
from apps.launches.sweeps import create_sweep
from apps.projects.models import Project
from tests.conftest import client_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template
from tests.launches.test_sweeps import PARAMETERS

pytestmark = pytest.mark.django_db


def ended(project: Project, team: Team, user: User, status: str, exit_code: int) -> Launch:
    template = make_template(team, "train", ["python", "train.py"], backends=["local"])
    return Launch.objects.create(
        project=project, template=template, created_by=user, backend="local", status=status, exit_code=exit_code
    )


def test_a_launch_cancelled_by_sigterm_says_cancelled_sigterm_not_exit_code_minus_15(
    ada: User, team: Team, project: Project
) -> None:
    launch = ended(project, team, ada, Status.CANCELLED, -15)
    page = client_for(ada).get(f"/launches/{launch.pk}/").content.decode()
    assert "cancelled (SIGTERM)" in page
    assert "-15" not in page


def test_a_failed_launch_ended_by_a_signal_names_the_signal_and_a_plain_exit_shows_its_code(
    ada: User, team: Team, project: Project
) -> None:
    killed = ended(project, team, ada, Status.FAILED, -9)
    assert "ended by SIGKILL" in client_for(ada).get(f"/launches/{killed.pk}/").content.decode()
    failed = Launch.objects.create(
        project=project, template=killed.template, created_by=ada, backend="local", status=Status.FAILED, exit_code=3
    )
    assert "exit code 3" in client_for(ada).get(f"/launches/{failed.pk}/").content.decode()


def test_a_launch_has_one_name_on_every_page_and_in_mlflow(
    ada: User,
    linked_project: Project,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """An unnamed launch is called by its template's slug, like its MLflow run; a sweep's
    trial is "<sweep> #<id> trial N" (the sweep's name, "sweep of <template>" by default,
    like its MLflow parent run) in MLflow, the sweep page,
    the launch list and its own page; the job name is only ever the muted id beside it."""
    template = make_template(linked_project.team, "train", ["python", "train.py"], parameters=PARAMETERS)
    launch = create_launch(ada, linked_project, template)
    assert launch.display_name == "train" == fake_mlflow.runs[launch.mlflow_run_id]["name"]

    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(
            ada, linked_project, template, strategy="grid", space={"lr": [0.1, 0.2]}, max_trials=2, parallelism=2
        )
    trials = list(sweep.trials.order_by("trial"))
    assert sweep.display_name == "sweep of train" == fake_mlflow.runs[sweep.mlflow_parent_run_id]["name"]
    assert [t.display_name for t in trials] == [f"sweep of train #{sweep.pk} trial {n}" for n in (1, 2)]
    assert [fake_mlflow.runs[t.mlflow_run_id]["name"] for t in trials] == [t.display_name for t in trials]

    client = client_for(ada)
    pages = {
        "sweep": client.get(f"/launches/sweeps/{sweep.pk}/").content.decode(),
        "list": client.get("/launches/").content.decode(),
        "launch": client.get(f"/launches/{trials[0].pk}/").content.decode(),
    }
    for where, page in pages.items():
        assert f">{trials[0].display_name}</a>" in page or f"<h1>{trials[0].display_name} " in page, where
        # Never the job name as the label of a link to the launch.
        assert f">{trials[0].job_name}</a>" not in page, where
    assert f"<title>{trials[0].display_name}" in pages["launch"]


@pytest.mark.parametrize(("host_gpus", "expected"), [(0, "this host has no GPUs"), (2, "at most 2")])
def test_the_gpu_field_on_the_local_backend_follows_the_hosts_gpus(
    ada: User, team: Team, project: Project, monkeypatch: pytest.MonkeyPatch, host_gpus: int, expected: str
) -> None:
    Project.objects.filter(pk=project.pk).update(backend="local")
    monkeypatch.setattr(
        "apps.compute.local.nvml_gpus", lambda: [GpuDevice(node="h", index=i, model="G") for i in range(host_gpus)]
    )
    template = make_template(team, "gpu", ["python", "train.py"], backends=["local"], max_resources={"gpus": 4})
    page = client_for(ada).get(f"/launches/new/?template={template.pk}").content.decode()
    assert expected in page
    assert "at most 4" not in page
    if host_gpus == 0:
        assert 'name="gpus"' in page and "disabled" in page.split('name="gpus"')[1].split(">")[0]


def test_a_long_sweep_name_keeps_what_tells_its_trials_apart(ada: User, team: Team, project: Project) -> None:
    template = make_template(team, "train", ["python", "train.py"], backends=["local"])
    sweep = Sweep.objects.create(
        project=project,
        template=template,
        created_by=ada,
        name="x" * 120,
        strategy="grid",
        space={"lr": [0.1]},
        max_trials=12,
        parallelism=1,
    )
    names = [sweep.trial_name(i) for i in (0, 9, 10, 11)]
    assert all(len(n) <= 120 for n in names) and len(set(names)) == 4
    assert names[-1].endswith(f" #{sweep.pk} trial 12") and str(sweep) == f"{'x' * 120} #{sweep.pk}"

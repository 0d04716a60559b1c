"""Launch pages say one word per state: a launch ended by a signal shows the signal by
name ("cancelled (SIGTERM)", never "exit code -15"), a sweep's trials carry the name they
have everywhere else, and the GPU field says why it is 0 on a host without GPUs."""

from __future__ import annotations

import pytest

from apps.accounts.models import Team, User
from apps.compute.base import GpuDevice
from apps.launches.models import Launch, Status, Sweep
from apps.projects.models import Project
from tests.conftest import client_for
from tests.launches.conftest import make_template

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


def test_a_sweeps_trials_are_named_as_in_the_launch_list(ada: User, team: Team, project: Project) -> None:
    template = make_template(team, "train", ["python", "train.py"], backends=["local"])
    sweep = Sweep.objects.create(
        project=project,
        template=template,
        created_by=ada,
        name="lr-search",
        strategy="grid",
        space={"lr": [0.1]},
        max_trials=1,
        parallelism=1,
    )
    trial = Launch.objects.create(
        project=project,
        template=template,
        created_by=ada,
        backend="local",
        sweep=sweep,
        name=f"lr-search #{sweep.pk} trial 1",
        status=Status.SUCCEEDED,
    )
    sweep_page = client_for(ada).get(f"/launches/sweeps/{sweep.pk}/").content.decode()
    list_page = client_for(ada).get("/launches/").content.decode()
    assert trial.name in sweep_page and trial.name in list_page


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

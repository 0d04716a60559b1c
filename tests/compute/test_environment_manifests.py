"""Job and Indexed-Job manifests carry the launch's environment: its image and pod defaults
(node selector under the GPU product's, tolerations added, variables added under Plinth's
own), and stay valid against the real Kubernetes schema (strict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from apps.accounts.models import User
from apps.compute.k8s import build_job_manifest
from apps.compute.k8s.indexed import build_indexed_job_manifest
from apps.environments.models import Environment, EnvironmentState
from apps.launches import sweeps
from apps.launches.models import Launch, Template
from apps.projects.models import Backend, ExperimentState, Project
from apps.tracking.gateway import MlflowGateway
from portal.celery import app
from tests.compute.fakes import GPU_MODEL, SCHEMA_VERSION, make_launch, make_template
from tests.launches.conftest import FakeMlflow

pytestmark = pytest.mark.django_db

IMAGE = "registry.example/sklearn@sha256:" + "c" * 64
SPOT = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
CPU_ONLY = {"cpu": "2", "memory": "4Gi", "gpus": 0, "gpu_product": ""}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def validated(manifest: dict[str, Any]) -> dict[str, Any]:
    assert kubernetes_validate.validate(manifest, SCHEMA_VERSION, strict=True) == SCHEMA_VERSION.rsplit(".", 1)[0]
    return manifest


def pod_and_container(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = manifest["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def setattr_conf(before: tuple[bool, bool]) -> None:
    app.conf.task_always_eager, app.conf.task_eager_propagates = before


@pytest.fixture
def sklearn_env() -> Environment:
    return Environment.objects.create(
        name="sklearn-1.7",
        version=1,
        image=IMAGE,
        state=EnvironmentState.READY,
        pod_defaults={
            "node_selector": {"pool": "cpu-large", "nvidia.com/gpu.product": "Env-Chosen-GPU"},
            "tolerations": [SPOT, GPU_TOLERATION],
            "env": {"OMP_NUM_THREADS": "4", "MLFLOW_TRACKING_URI": "http://evil.example", "PLINTH_LAUNCH_ID": "0"},
        },
    )


def test_a_job_runs_the_environments_image_with_its_pod_defaults(
    project: Project, lin: User, sklearn_env: Environment
) -> None:
    launch = make_launch(project, lin, environment=sklearn_env, resources=CPU_ONLY)
    pod, main = pod_and_container(validated(build_job_manifest(launch)))
    assert main["image"] == IMAGE
    assert pod["nodeSelector"] == {"pool": "cpu-large", "nvidia.com/gpu.product": "Env-Chosen-GPU"}
    assert pod["tolerations"] == [SPOT, GPU_TOLERATION]
    env = {item["name"]: item["value"] for item in main["env"]}
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["MLFLOW_TRACKING_URI"] != "http://evil.example"  # Plinth's own win
    assert env["PLINTH_LAUNCH_ID"] == str(launch.pk)
    assert len(main["env"]) == len(env)  # no name twice


def test_the_gpu_product_selector_wins_and_tolerations_are_not_repeated(
    project: Project, lin: User, sklearn_env: Environment
) -> None:
    resources = {"cpu": "8", "memory": "64Gi", "gpus": 2, "gpu_product": GPU_MODEL}
    launch = make_launch(project, lin, environment=sklearn_env, resources=resources)
    pod, _main = pod_and_container(validated(build_job_manifest(launch)))
    assert pod["nodeSelector"] == {"pool": "cpu-large", "nvidia.com/gpu.product": GPU_MODEL}
    assert pod["tolerations"] == [GPU_TOLERATION, SPOT]


def test_an_environment_without_an_image_keeps_the_templates(project: Project, lin: User) -> None:
    portal = Environment.objects.get(is_default=True)
    launch = make_launch(project, lin, environment=portal, resources=CPU_ONLY)
    pod, main = pod_and_container(validated(build_job_manifest(launch)))
    assert main["image"] == make_template(project).image
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_an_indexed_job_runs_the_sweeps_environment(
    ada: User,
    project: Project,
    sklearn_env: Environment,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    request: pytest.FixtureRequest,
) -> None:
    fake = FakeMlflow()
    for method in ("create_run", "set_tag", "end_run", "delete_run"):
        monkeypatch.setattr(
            MlflowGateway, method, lambda self, *args, _m=method, **kwargs: getattr(fake, _m)(*args, **kwargs)
        )
    monkeypatch.setattr("apps.launches.workloads.submit", lambda sweep_pk: "fake")
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True  # advance runs at once
    request.addfinalizer(lambda: setattr_conf(before))
    Project.objects.filter(pk=project.pk).update(
        backend=Backend.KUBERNETES,
        gpu_quota=4,
        mlflow_state=ExperimentState.LINKED,
        mlflow_experiment_id="7",
        environment=sklearn_env,
    )
    project.refresh_from_db()
    template = Template.objects.create(
        team=project.team,
        slug="train",
        name="Train",
        image="ghcr.io/example/train:1.0",
        command=["python", "train.py", "--lr={lr}"],
        parameters={"lr": {"type": "float", "default": 0.01}},
        max_resources={"cpu": "2", "memory": "4Gi", "gpus": 1},
        backends=["kubernetes"],
    )
    with django_capture_on_commit_callbacks(execute=True):
        sweep = sweeps.create_sweep(
            ada,
            project,
            template,
            strategy="grid",
            space={"lr": [0.1, 0.01, 0.001]},
            max_trials=3,
            parallelism=3,
            resources={"cpu": "1", "memory": "1Gi", "gpus": 1, "gpu_product": GPU_MODEL},
        )
    sweep.refresh_from_db()
    trials = list(Launch.objects.filter(sweep=sweep).select_related("environment").order_by("trial"))
    assert sweep.workload and len(trials) == 3
    assert {t.environment_id for t in trials} == {sklearn_env.pk}
    assert {fake.runs[t.mlflow_run_id]["tags"]["plinth.environment"] for t in trials} == {"sklearn-1.7:1"}
    pod, main = pod_and_container(validated(build_indexed_job_manifest(sweep, trials)))
    assert main["image"] == IMAGE
    assert pod["nodeSelector"] == {"pool": "cpu-large", "nvidia.com/gpu.product": GPU_MODEL}
    assert pod["tolerations"] == [GPU_TOLERATION, SPOT]
    env = {item["name"]: item["value"] for item in main["env"]}
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["MLFLOW_TRACKING_URI"] != "http://evil.example"
    assert "PLINTH_LAUNCH_ID" not in env  # each trial's own comes from its script, never the environment

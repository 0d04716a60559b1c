"""Every Job manifest the backend builds is valid against the real Kubernetes OpenAPI schema
(strict: no unknown fields) and says what the launch asked for."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from apps.accounts.models import User
from apps.compute.k8s import build_job_manifest
from apps.projects.models import Project
from tests.compute.fakes import GPU_MODEL, SCHEMA_VERSION, make_launch, make_template

pytestmark = pytest.mark.django_db

HOSTILE = ["; rm -rf /", "$(whoami)", "`id`", "a b\tc", "' OR 1=1 --", '"quoted"', "--flag=x", "\\n", "&& echo hi |"]


def validated(manifest: dict[str, Any]) -> dict[str, Any]:
    assert kubernetes_validate.validate(manifest, SCHEMA_VERSION, strict=True) == SCHEMA_VERSION.rsplit(".", 1)[0]
    return manifest


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_newest_schema_is_used() -> None:
    assert kubernetes_validate.utils.all_versions()[-1] == SCHEMA_VERSION
    assert tuple(int(part) for part in SCHEMA_VERSION.split(".")[:2]) >= (1, 37)


def test_a_cpu_only_job(project: Project, lin: User, settings: Any) -> None:
    settings.PLINTH_KUBE_BACKOFF_LIMIT = 0
    settings.PLINTH_KUBE_JOB_TTL = 3600
    launch = make_launch(project, lin, resources={"cpu": "2", "memory": "4Gi", "gpus": 0, "gpu_product": ""})
    manifest = validated(build_job_manifest(launch))

    labels = {
        "plinth.dev/launch": str(launch.pk),
        "plinth.dev/project": "demo",
        "plinth.dev/team": "demo",
        "plinth.dev/managed": "true",
    }
    assert manifest["metadata"] == {"name": f"plinth-{launch.pk}", "namespace": "plinth-demo-demo", "labels": labels}
    spec = manifest["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (0, 600, 3600)
    assert "suspend" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "nodeSelector" not in pod and "tolerations" not in pod
    main = container(manifest)
    assert main["image"] == "ghcr.io/example/train:1.0"
    assert main["command"] == ["python"]
    assert main["args"] == ["train.py", "--lr=0.01"]
    assert main["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    env = {item["name"]: item["value"] for item in main["env"]}
    assert env["MLFLOW_RUN_ID"] == "r1" and env["MLFLOW_EXPERIMENT_ID"] == "1"
    assert env["PLINTH_LAUNCH_ID"] == str(launch.pk) and env["PLINTH_PARAM_LR"] == "0.01"
    assert all(isinstance(item["value"], str) for item in main["env"])
    assert main["envFrom"] == [{"secretRef": {"name": settings.PLINTH_KUBE_MLFLOW_SECRET, "optional": True}}]


def test_a_gpu_job_asks_for_the_product_and_tolerates_gpu_taints(project: Project, lin: User) -> None:
    launch = make_launch(project, lin, resources={"cpu": "8", "memory": "64Gi", "gpus": 2, "gpu_product": GPU_MODEL})
    manifest = validated(build_job_manifest(launch))
    pod = manifest["spec"]["template"]["spec"]
    assert container(manifest)["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": GPU_MODEL}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_gpu_job_without_a_model_runs_on_any_gpu(project: Project, lin: User) -> None:
    launch = make_launch(project, lin, resources={"cpu": "1", "memory": "1Gi", "gpus": 1, "gpu_product": ""})
    pod = validated(build_job_manifest(launch))["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_a_kueue_project_submits_suspended_jobs_labelled_with_the_queue(project: Project, lin: User) -> None:
    project.kueue_queue = "team-demo"
    project.save()
    manifest = validated(build_job_manifest(make_launch(project, lin)))
    assert manifest["spec"]["suspend"] is True
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-demo"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_parameter_values_stay_single_literal_arguments(project: Project, lin: User, value: str) -> None:
    template = make_template(project, slug="echo", command=["echo", "{note}", "--lr={lr}"])
    launch = make_launch(project, lin, template=template, parameters={"note": value, "lr": "1e-3", "extra": value})
    main = container(validated(build_job_manifest(launch)))
    assert main["command"] == ["echo"]
    assert main["args"] == [value, "--lr=1e-3", f"--extra={value}"]
    env = {item["name"]: item["value"] for item in main["env"]}
    assert env["PLINTH_PARAM_NOTE"] == value and env["PLINTH_PARAM_EXTRA"] == value


def test_a_template_without_a_command_passes_parameters_to_the_image_entrypoint(project: Project, lin: User) -> None:
    template = make_template(project, slug="entry", command=[])
    main = container(validated(build_job_manifest(make_launch(project, lin, template=template))))
    assert "command" not in main
    assert main["args"] == ["--lr=0.01"]


def test_without_an_mlflow_secret_there_is_no_env_from(project: Project, lin: User, settings: Any) -> None:
    settings.PLINTH_KUBE_MLFLOW_SECRET = ""
    assert "envFrom" not in container(validated(build_job_manifest(make_launch(project, lin))))


def test_a_manifest_with_an_unknown_field_fails_strict_validation(project: Project, lin: User) -> None:
    # Guards the guard: strict mode really rejects what the API server would drop or refuse.
    manifest = build_job_manifest(make_launch(project, lin))
    manifest["spec"]["template"]["spec"]["containers"][0]["cmd"] = ["oops"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, SCHEMA_VERSION, strict=True)

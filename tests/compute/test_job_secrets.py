"""A Kubernetes Job carries none of the portal's secrets: the worker that builds it has them
in its environment and settings, and none of their names or values may reach the manifest
(env, envFrom, volumes). The only Secret a job reads is its namespace's MLflow one."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from apps.accounts.models import User
from apps.compute.k8s import build_job_manifest
from apps.projects.models import Project
from tests.compute.fakes import SCHEMA_VERSION, make_launch

pytestmark = pytest.mark.django_db

# What a worker's environment holds in production (deploy/secret.example.yaml and beyond).
WORKER_SECRETS = {
    "PLINTH_SECRET_KEY": "fake-django-secret-key-4b1d",
    "DATABASE_URL": "postgres://plinth:fake-db-password-77a1@db:5432/plinth",
    "CELERY_BROKER_URL": "redis://:fake-redis-password-9c3e@redis:6379/0",
    "PLINTH_CACHE_URL": "redis://:fake-cache-password-1f0b@redis:6379/1",
    "MLFLOW_TRACKING_USERNAME": "plinth-portal-account",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-e5d2",
    "PLINTH_MLFLOW_ADMIN_PASSWORD": "fake-mlflow-admin-password-03aa",
    "PLINTH_OIDC_CLIENT_SECRET": "fake-oidc-client-secret-6b6b",
    "PLINTH_OIDC_RP_CLIENT_SECRET": "fake-oidc-rp-client-secret-a9a9",
    "PLINTH_PROMETHEUS_TOKEN": "fake-prometheus-token-2c2c",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-access-key-8e8e",
}
PORTAL_SECRET_OBJECT = "plinth-secrets"  # the portal's own Secret (deploy/secret.example.yaml)


@pytest.fixture
def worker_with_secrets(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    settings.SECRET_KEY = WORKER_SECRETS["PLINTH_SECRET_KEY"]
    settings.MLFLOW_TRACKING_USERNAME = WORKER_SECRETS["MLFLOW_TRACKING_USERNAME"]
    settings.MLFLOW_TRACKING_PASSWORD = WORKER_SECRETS["MLFLOW_TRACKING_PASSWORD"]
    settings.PLINTH_MLFLOW_ADMIN_PASSWORD = WORKER_SECRETS["PLINTH_MLFLOW_ADMIN_PASSWORD"]
    settings.OIDC_RP_CLIENT_SECRET = WORKER_SECRETS["PLINTH_OIDC_CLIENT_SECRET"]
    # The portal's tracking URI carries its own account inline: jobs must get the address only.
    settings.MLFLOW_TRACKING_URI = (
        f"http://{WORKER_SECRETS['MLFLOW_TRACKING_USERNAME']}:{WORKER_SECRETS['MLFLOW_TRACKING_PASSWORD']}"
        "@mlflow.mlflow.svc:5000"
    )
    settings.PLINTH_JOB_MLFLOW_URI = ""
    settings.PLINTH_KUBE_MLFLOW_SECRET = "plinth-mlflow"


def test_a_job_manifest_carries_no_portal_secret_name_or_value(
    worker_with_secrets: None, project: Project, lin: User
) -> None:
    launch = make_launch(project, lin, parameters={"lr": 0.5, "note": "hello"})
    manifest = build_job_manifest(launch)
    assert kubernetes_validate.validate(manifest, SCHEMA_VERSION, strict=True)
    text = json.dumps(manifest)

    for name, value in WORKER_SECRETS.items():
        assert value not in text, f"the value of {name} reached the Job manifest"
        assert name not in text, f"{name} is named in the Job manifest"
    assert PORTAL_SECRET_OBJECT not in text

    pod = manifest["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    env = {item["name"]: item["value"] for item in main["env"]}
    assert set(env) == {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_ID",
        "PLINTH_LAUNCH_ID",
        "PLINTH_PROJECT",
        "PLINTH_PARAM_LR",
        "PLINTH_PARAM_NOTE",
    }
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"
    assert (env["MLFLOW_RUN_ID"], env["MLFLOW_EXPERIMENT_ID"]) == (launch.mlflow_run_id, launch.mlflow_experiment_id)
    assert all("valueFrom" not in item for item in main["env"])
    # The one Secret a job may read: its own namespace's MLflow credentials.
    assert main["envFrom"] == [{"secretRef": {"name": "plinth-mlflow", "optional": True}}]
    assert "volumes" not in pod and "volumeMounts" not in main
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_a_job_manifest_without_an_mlflow_secret_reads_no_secret_at_all(
    worker_with_secrets: None, settings: Any, project: Project, lin: User
) -> None:
    settings.PLINTH_KUBE_MLFLOW_SECRET = ""
    manifest = build_job_manifest(make_launch(project, lin))
    (main,) = manifest["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in main
    assert "secret" not in json.dumps(manifest).lower()


def test_the_job_tracking_uri_keeps_its_path_and_drops_only_the_credentials(
    settings: Any, project: Project, lin: User
) -> None:
    settings.PLINTH_JOB_MLFLOW_URI = "https://robot:s3cret-token@mlflow.example.com:8443/tracking?x=1"
    manifest = build_job_manifest(make_launch(project, lin))
    (main,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in main["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com:8443/tracking?x=1"

"""The portal's own deployment: every manifest under deploy/ passes kubernetes-validate in
strict mode, and the pieces fit together (web, worker and beat Deployments, a migration
Job, a Service, probes on /healthz and /readyz, configuration from the ConfigMap and the
Secret, settings the portal actually reads)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VERSION = kubernetes_validate.latest_version()


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests() if m["kind"] == kind}


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_every_manifest_passes_kubernetes_validate_strict(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, VERSION, strict=True)


def test_web_worker_beat_migration_and_service_are_there() -> None:
    assert set(by_name("Deployment")) == {"plinth-web", "plinth-worker", "plinth-beat"}
    assert set(by_name("Job")) == {"plinth-migrate"}
    service = by_name("Service")["plinth-web"]
    assert service["spec"]["selector"] == by_name("Deployment")["plinth-web"]["spec"]["selector"]["matchLabels"]
    assert by_name("Deployment")["plinth-beat"]["spec"] == {
        **by_name("Deployment")["plinth-beat"]["spec"],
        "replicas": 1,
        "strategy": {"type": "Recreate"},
    }
    [job_container] = by_name("Job")["plinth-migrate"]["spec"]["template"]["spec"]["containers"]
    assert job_container["command"] == ["python", "manage.py", "migrate", "--noinput"]


def test_the_web_probes_use_healthz_and_readyz() -> None:
    [web] = by_name("Deployment")["plinth-web"]["spec"]["template"]["spec"]["containers"]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    host = web["readinessProbe"]["httpGet"]["httpHeaders"][0]["value"]
    allowed = by_name("ConfigMap")["plinth-config"]["data"]["PLINTH_ALLOWED_HOSTS"].split(",")
    assert host in allowed, "the probes' Host header must be an allowed host, or Django answers 400"


def test_every_pod_reads_the_configmap_and_the_secret_and_runs_unprivileged() -> None:
    workloads = [*by_name("Deployment").values(), *by_name("Job").values()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["serviceAccountName"] == "plinth"
        for container in pod["containers"]:
            assert container["envFrom"] == [
                {"configMapRef": {"name": "plinth-config"}},
                {"secretRef": {"name": "plinth-secrets"}},
            ]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_configuration_keys_are_settings_the_portal_reads() -> None:
    settings_source = (ROOT / "portal" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list|secret)\(\s*"([A-Z0-9_]+)"', settings_source))
    keys = set(by_name("ConfigMap")["plinth-config"]["data"]) | set(by_name("Secret")["plinth-secrets"]["stringData"])
    assert keys - read == set(), f"deploy/ sets variables portal/settings.py never reads: {keys - read}"
    assert {"PLINTH_SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "PLINTH_CACHE_URL"} <= keys


def test_the_portal_may_bind_view_and_edit_and_manage_what_the_sync_writes() -> None:
    rules = by_name("ClusterRole")["plinth-controller"]["rules"]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert {"create", "patch"} <= granted[("", "namespaces")]
    assert {"create", "patch", "delete", "list"} <= granted[("rbac.authorization.k8s.io", "rolebindings")]
    assert granted[("rbac.authorization.k8s.io", "clusterroles")] == {"bind"}
    assert {"create", "patch"} <= granted[("", "resourcequotas")]
    assert {"create", "patch"} <= granted[("kueue.x-k8s.io", "localqueues")]


def test_the_dockerfile_builds_static_files_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "collectstatic" in dockerfile and "apps.core.vendor" in dockerfile
    assert "USER 10001" in dockerfile and "/healthz" in dockerfile

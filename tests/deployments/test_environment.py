"""Which environment a revision serves in, and the requirements pre-flight, against the fake
serving backend and the fake registry: the environment the training run recorded is the
default, the deployment's own wins, a retired one (or a building one) fails the revision
before any model server starts, a model whose requirements the environment does not meet
is refused with every package named; changing a deployment's environment rolls out a new
revision of the same version; the API, the form and the page show the environments.
The real local run of the requirements check is in test_environment_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, InvalidInput
from apps.deployments import rollout, services
from apps.deployments.environment import conda_pip_requirements, unmet_sentence
from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus, RolloutStep
from apps.deployments.serving.local import model_server_env
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from apps.environments.packages import Problem
from apps.environments.runtime import portal_packages
from apps.environments.selection import platform_default
from apps.notifications.models import Notification
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.deployments.fakes import FakeServing
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db

EXAMPLE = {"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}


def built(name: str, packages: dict[str, str], *, team: Any = None, state: str = EnvironmentState.READY) -> Environment:
    """A ready environment `name:1` whose (fake) build has `packages`."""
    build = EnvironmentBuild.objects.create(
        requirements_hash=f"hash-{name}",
        status=BuildStatus.READY,
        python="/nonexistent/bin/python",
        path="/nonexistent",
        packages=packages,
    )
    return Environment.objects.create(team=team, name=name, version=1, state=state, build=build)


@pytest.fixture
def sklearn_env() -> Environment:
    return built("sklearn-1.7", {"scikit-learn": "1.7.1", "mlflow": "3.17.2", "cowsay": "6.1"})


@pytest.fixture
def deployment(project: Project, ada: Any, fake_registry: FakeRegistry, fake_serving: FakeServing) -> Deployment:
    fake_registry.set_alias("digits", "champion", 1)
    return Deployment.objects.create(
        project=project,
        name="digits-api",
        model_name="digits",
        alias="champion",
        backend="local",
        canary_percent=10,
        canary_minutes=0,
        input_example=EXAMPLE,
        created_by=ada,
    )


def run_id_of(fake_registry: FakeRegistry, version: int) -> str:
    return str(fake_registry.models["digits"]["versions"][version]["run_id"])


def first(deployment: Deployment) -> Revision:
    return Revision.objects.select_related("environment").get(deployment=deployment, number=1)


# -- which environment ----------------------------------------------------------------------------
def test_the_environment_the_training_run_recorded_is_the_default(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, sklearn_env: Environment
) -> None:
    fake_serving.run_environments[run_id_of(fake_registry, 1)] = "sklearn-1.7:1"
    rollout.reconcile(deployment.pk)
    revision = first(deployment)
    assert (revision.status, revision.environment) == (RevisionStatus.SERVING, sklearn_env)


def test_without_a_recorded_one_the_projects_default_serves(
    deployment: Deployment, fake_serving: FakeServing, project: Project
) -> None:
    rollout.reconcile(deployment.pk)
    default = platform_default()
    assert default is not None and default.is_portal
    assert first(deployment).environment == default  # the project's environment is the platform default


def test_the_deployments_own_environment_wins_over_the_recorded_one(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, sklearn_env: Environment
) -> None:
    other = built("sklearn-1.8", {"scikit-learn": "1.8.0"})
    fake_serving.run_environments[run_id_of(fake_registry, 1)] = "sklearn-1.7:1"
    Deployment.objects.filter(pk=deployment.pk).update(environment=other)
    rollout.reconcile(deployment.pk)
    assert first(deployment).environment == other


def test_another_teams_environment_named_by_the_run_tag_is_not_used(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, other_team: Any
) -> None:
    """The tag is the job's to write: it cannot bring another team's image or pod defaults."""
    built("secret", {"scikit-learn": "1.7.1"}, team=other_team)
    fake_serving.run_environments[run_id_of(fake_registry, 1)] = f"{other_team.slug}/secret:1"
    rollout.reconcile(deployment.pk)
    assert first(deployment).environment == platform_default()


def test_a_deployment_cannot_ask_for_another_teams_environment_even_for_a_member_of_both(
    deployment: Deployment, lin: Any, other_team: Any
) -> None:
    from apps.accounts.models import Membership
    from apps.deployments import services

    Membership.objects.get_or_create(user=lin, team=other_team, defaults={"role": "lead"})
    theirs = built("secret", {"scikit-learn": "1.7.1"}, team=other_team)
    with pytest.raises(InvalidInput) as refused:
        services.update_deployment(lin, deployment, environment=theirs.pk)
    assert "environment" in refused.value.fields
    deployment.refresh_from_db()
    assert deployment.environment_id is None


def test_a_retired_recorded_environment_fails_the_revision_before_its_server_starts(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, sklearn_env: Environment
) -> None:
    newer = built("sklearn-1.8", {"scikit-learn": "1.8.0"})
    Environment.objects.filter(pk=sklearn_env.pk).update(state=EnvironmentState.RETIRED, replaced_by=newer)
    fake_serving.run_environments[run_id_of(fake_registry, 1)] = "sklearn-1.7:1"
    rollout.reconcile(deployment.pk)
    revision = first(deployment)
    assert revision.status == RevisionStatus.FAILED
    assert "sklearn-1.7:1 is retired" in revision.reason and "Use sklearn-1.8:1 instead" in revision.reason
    assert (revision.traffic, fake_serving.calls["start"], fake_serving.servers) == (0, 0, {})
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.FAILED
    verbs = AuditEvent.objects.filter(target_id=str(deployment.pk)).values_list("verb", flat=True)
    assert "deployment.preflight_failed" in set(verbs)
    assert deployment.events.filter(step=RolloutStep.PREFLIGHT_FAILED, revision=revision).exists()
    assert rollout.reconcile(deployment.pk) == "nothing to do"  # not retried until a person changes it


def test_a_building_environment_is_refused_too(
    deployment: Deployment, fake_serving: FakeServing, sklearn_env: Environment
) -> None:
    Environment.objects.filter(pk=sklearn_env.pk).update(state=EnvironmentState.BUILDING)
    Deployment.objects.filter(pk=deployment.pk).update(environment=sklearn_env)
    rollout.reconcile(deployment.pk)
    revision = first(deployment)
    assert revision.status == RevisionStatus.FAILED and "still building" in revision.reason
    assert fake_serving.calls["start"] == 0


# -- the requirements pre-flight ------------------------------------------------------------------
def test_unmet_requirements_are_all_named_and_the_server_never_starts(
    deployment: Deployment, fake_serving: FakeServing, ada: Any
) -> None:
    fake_serving.requirements[1] = ["mlflow", "cowsay==6.1", "numpy==0.0.1", "not-a-package-xyz>=1"]
    rollout.reconcile(deployment.pk)
    revision = first(deployment)
    numpy = portal_packages().get("numpy")
    assert revision.status == RevisionStatus.FAILED
    assert revision.reason.startswith(
        "pre-flight failed: The environment portal:1 does not meet the model's requirements: "
        "cowsay (==6.1) is not installed; "
        f"numpy {numpy} is installed, the model needs ==0.0.1; not-a-package-xyz (>=1) is not installed."
    )
    assert "mlflow" not in revision.reason  # installed: not a problem
    assert (fake_serving.calls["start"], fake_serving.requests) == (0, {})
    notice = Notification.objects.filter(verb="deployment.preflight_failed").get()
    assert "cowsay" in notice.body


def test_an_environment_that_has_them_passes(
    deployment: Deployment, fake_serving: FakeServing, sklearn_env: Environment
) -> None:
    fake_serving.requirements[1] = ["mlflow==3.17.2", "scikit-learn==1.7.1", "cowsay==6.1"]
    Deployment.objects.filter(pk=deployment.pk).update(environment=sklearn_env)
    rollout.reconcile(deployment.pk)
    assert (first(deployment).status, first(deployment).traffic) == (RevisionStatus.SERVING, 100)


def test_mlflow_down_while_reading_the_requirements_waits(
    deployment: Deployment, fake_serving: FakeServing, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.deployments import environment
    from apps.registry.mlflow import MlflowUnavailable

    def down(name: str, version: int) -> list[str]:
        raise MlflowUnavailable("MLflow is unreachable (fake).")

    monkeypatch.setattr(environment, "model_requirements", down)
    rollout.reconcile(deployment.pk)
    assert (first(deployment).status, fake_serving.calls["start"]) == (RevisionStatus.STARTING, 0)
    monkeypatch.setattr(environment, "model_requirements", lambda name, version: None)
    rollout.reconcile(deployment.pk)
    assert first(deployment).status == RevisionStatus.SERVING


def test_the_sentence_and_condas_pip_section() -> None:
    env = Environment(name="portal", version=1)
    problems = [Problem("cowsay", "==6.1", "", "missing"), Problem("numpy", "==2.3.1", "1.26.4", "conflict")]
    assert unmet_sentence(env, problems) == (
        "The environment portal:1 does not meet the model's requirements: cowsay (==6.1) is not installed; "
        "numpy 1.26.4 is installed, the model needs ==2.3.1."
    )
    conda = "name: mlflow-env\ndependencies:\n- python=3.11\n- pip<=25\n- pip:\n  - mlflow==3.17.2\n  - cowsay==6.1\n"
    assert conda_pip_requirements(conda) == ["mlflow==3.17.2", "cowsay==6.1"]
    assert conda_pip_requirements(": not yaml [") == [] and conda_pip_requirements("[1, 2]") == []


def test_the_model_server_runs_on_the_environments_interpreter(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = str(venv / "bin" / "python")
    env = model_server_env(tmp_path / "r1", {"PATH": "/usr/bin", "SECRET": "x"}, python=python)
    parts = env["PATH"].split(":")
    assert parts[:2] == [str(tmp_path / "r1" / "bin"), str(venv / "bin")] and parts[-1] == "/usr/bin"
    assert env["VIRTUAL_ENV"] == str(venv) and "SECRET" not in env
    shim = (tmp_path / "r1" / "bin" / "uvicorn").read_text()
    assert f"exec {python} -m uvicorn" in shim


# -- create / update ------------------------------------------------------------------------------
@pytest.fixture
def digits_model(project: Project) -> Any:
    from apps.registry.models import RegisteredModel

    return RegisteredModel.objects.create(name="digits", project=project)


def test_a_deployment_names_an_environment_and_refuses_unusable_ones(
    ada: Any, project: Project, digits_model: Any, no_reconcile: list[int], sklearn_env: Environment
) -> None:
    made = services.create_deployment(ada, project, name="a", model="digits", environment=sklearn_env.pk)
    assert made.environment == sklearn_env
    failed = built("broken", {}, state=EnvironmentState.FAILED)
    with pytest.raises(InvalidInput) as caught:
        services.create_deployment(ada, project, name="b", model="digits", environment=failed.pk)
    assert "environment" in caught.value.fields
    for state in (EnvironmentState.BUILDING, EnvironmentState.RETIRED):
        env = built(f"env-{state}", {}, state=state)
        with pytest.raises(Conflict) as conflict:
            services.create_deployment(ada, project, name="c", model="digits", environment=env.pk)
        assert "environment" in conflict.value.fields
    with pytest.raises(InvalidInput):
        services.create_deployment(ada, project, name="d", model="digits", environment=999999)
    assert not Deployment.objects.filter(name__in=["b", "c", "d"]).exists()


def test_another_teams_environment_is_not_usable(
    ada: Any, project: Project, digits_model: Any, no_reconcile: list[int]
) -> None:
    from apps.accounts.models import Team

    other = Team.objects.create(slug="elsewhere", name="Elsewhere")
    theirs = built("theirs", {}, team=other)
    with pytest.raises(InvalidInput) as caught:
        services.create_deployment(ada, project, name="a", model="digits", environment=theirs.pk)
    assert "environment" in caught.value.fields


def test_changing_the_environment_rolls_out_a_new_revision_of_the_same_version(
    deployment: Deployment, fake_serving: FakeServing, sklearn_env: Environment, ada: Any
) -> None:
    rollout.reconcile(deployment.pk)
    assert first(deployment).status == RevisionStatus.SERVING
    services.update_deployment(ada, deployment, environment=sklearn_env.pk)
    made = Revision.objects.get(deployment=deployment, number=2)
    assert (made.version, made.status) == (1, RevisionStatus.STARTING)
    for _ in range(4):
        rollout.reconcile(deployment.pk)
    rows = {r.number: (r.version, r.status, r.traffic, r.environment_id) for r in deployment.revisions.all()}
    assert rows[2] == (1, RevisionStatus.SERVING, 100, sklearn_env.pk)
    assert rows[1][1] == RevisionStatus.READY and rows[1][2] == 0  # warm for the rollback window
    audit = AuditEvent.objects.filter(target_id=str(deployment.pk), verb="deployment.update").get()
    assert audit.after is not None and audit.after["environment"] == "sklearn-1.7:1"
    services.update_deployment(ada, deployment, environment=sklearn_env.pk)  # unchanged: nothing new
    assert deployment.revisions.count() == 2


# -- API, form, page ------------------------------------------------------------------------------
def test_the_api_takes_and_shows_environments(
    ada: Any, project: Project, digits_model: Any, no_reconcile: list[int], sklearn_env: Environment
) -> None:
    api = api_for(ada)
    body = {"project": "demo/demo", "name": "digits-api", "model": "digits", "environment": sklearn_env.pk}
    answer = api.post("/api/v1/deployments/", body, format="json")
    assert answer.status_code == 201, answer.content
    assert (answer.json()["environment"], answer.json()["environment_label"]) == (sklearn_env.pk, "sklearn-1.7:1")
    pk = answer.json()["id"]
    Revision.objects.create(deployment_id=pk, number=1, version=1, environment=sklearn_env)
    shown = api.get(f"/api/v1/deployments/{pk}/").json()
    assert shown["revisions"][0]["environment_label"] == "sklearn-1.7:1"
    answer = api.patch(f"/api/v1/deployments/{pk}/", {"environment": None}, format="json")
    assert (answer.status_code, answer.json()["environment"], answer.json()["environment_label"]) == (200, None, None)
    retired = built("old", {}, state=EnvironmentState.RETIRED)
    answer = api.patch(f"/api/v1/deployments/{pk}/", {"environment": retired.pk}, format="json")
    assert answer.status_code == 409 and "environment" in str(answer.json())


def test_the_form_offers_usable_environments_and_the_page_shows_them(
    ada: Any, deployment: Deployment, sklearn_env: Environment
) -> None:
    built("old", {}, state=EnvironmentState.RETIRED)
    client = client_for(ada)
    page = client.get(f"/deployments/{deployment.pk}/edit/").content.decode()
    assert "sklearn-1.7:1" in page and "From the training run" in page and "old:1" not in page
    detail = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "from the training run" in detail
    Deployment.objects.filter(pk=deployment.pk).update(environment=sklearn_env)
    Revision.objects.create(deployment=deployment, number=1, version=1, environment=sklearn_env)
    detail = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert detail.count("sklearn-1.7:1") >= 2  # the deployment's setting and its revision's


# -- KServe ---------------------------------------------------------------------------------------
def test_the_inference_service_carries_the_environments_image_and_pod_defaults(
    project: Project, ada: Any, sklearn_env: Environment
) -> None:
    from apps.deployments import kserve
    from tests.deployments.test_kserve import core_valid

    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spot = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    Environment.objects.filter(pk=sklearn_env.pk).update(
        image="registry.example.com/ml/sklearn@sha256:" + "a" * 64,
        pod_defaults={
            "node_selector": {"pool": "inference", "nvidia.com/gpu.product": "any"},
            "tolerations": [spot, gpu_toleration],
            "env": {"OMP_NUM_THREADS": "2", "LANG": "C.UTF-8"},
        },
    )
    sklearn_env.refresh_from_db()
    deployment = Deployment.objects.create(
        project=project,
        name="digits",
        model_name="digits",
        backend="kubernetes",
        created_by=ada,
        resources={"cpu": "2", "memory": "4Gi", "gpus": 1, "gpu_product": "NVIDIA-L4"},
    )
    revision = Revision.objects.create(deployment=deployment, number=1, version=1, environment=sklearn_env)
    manifest = kserve.build_inference_service(revision, "s3://mlflow/1/models/m-1/artifacts")  # checked strictly
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"]["image"] == "registry.example.com/ml/sklearn@sha256:" + "a" * 64
    assert predictor["model"]["env"] == [
        {"name": "LANG", "value": "C.UTF-8"},
        {"name": "OMP_NUM_THREADS", "value": "2"},
    ]
    # The deployment's GPU model wins over the environment's label; the GPU toleration is there once.
    assert predictor["nodeSelector"] == {"pool": "inference", "nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"] == [spot, gpu_toleration]
    for toleration in predictor["tolerations"]:
        core_valid(toleration, "toleration-v1.json")
    for variable in predictor["model"]["env"]:
        core_valid(variable, "envvar-v1.json")
    # Strict: a typo inside an environment variable or a toleration is refused with its path.
    predictor["model"]["env"][0]["valeu"] = "x"
    predictor["tolerations"][0]["efect"] = "NoSchedule"
    with pytest.raises(kserve.ManifestError) as caught:
        kserve.check_inference_service(manifest)
    assert sorted(caught.value.problems) == [
        "spec.predictor.model.env[0].valeu: unknown field",
        "spec.predictor.tolerations[0].efect: unknown field",
    ]


def test_an_environment_without_image_or_pod_defaults_leaves_the_manifest_as_it_was(project: Project, ada: Any) -> None:
    from apps.deployments import kserve

    deployment = Deployment.objects.create(
        project=project, name="digits", model_name="digits", backend="kubernetes", created_by=ada
    )
    revision = Revision.objects.create(deployment=deployment, number=1, version=1, environment=platform_default())
    predictor = kserve.build_predictor(revision, "s3://m/1")
    assert "image" not in predictor["model"] and "env" not in predictor["model"]
    assert "nodeSelector" not in predictor and "tolerations" not in predictor

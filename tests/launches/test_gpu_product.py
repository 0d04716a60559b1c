"""The GPU type a launch, sweep or template asks for is `gpu_product`, the value of the
nvidia.com/gpu.product node label. `gpu_model`, its old name, is still read on input (API
and launch page) and never written or returned; stored rows were renamed by a migration."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from drf_spectacular.generators import SchemaGenerator

from apps.accounts.models import Team, User
from apps.compute.k8s.manifests import build_job_manifest
from apps.launches.models import Launch, Sweep, Template
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template

pytestmark = pytest.mark.django_db

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"
COMMAND = ["python", "train.py"]
PARAMETERS = {"lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0}}


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", COMMAND, parameters=PARAMETERS, max_resources={"gpus": 1})


def launch_api(user: User, resources: dict[str, Any]) -> Any:
    body = {"project": "demo/demo", "template": "train", "resources": resources}
    return api_for(user).post("/api/v1/launches/", body, format="json")


# --- the API ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["gpu_product", "gpu_model"])
def test_a_launch_stores_and_answers_gpu_product_whichever_name_it_was_given(
    key: str, ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = launch_api(ada, {key: A100})

    assert response.status_code == 201, response.json()
    assert response.json()["resources"]["gpu_product"] == A100
    assert "gpu_model" not in response.json()["resources"]
    stored = Launch.objects.get().resources
    assert stored["gpu_product"] == A100 and "gpu_model" not in stored


def test_the_same_value_under_both_names_is_accepted(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = launch_api(ada, {"gpu_product": A100, "gpu_model": A100})

    assert response.status_code == 201, response.json()
    assert Launch.objects.get().resources["gpu_product"] == A100


def test_different_values_under_both_names_are_a_400_on_the_deprecated_field_and_create_nothing(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = launch_api(ada, {"gpu_product": A100, "gpu_model": H100})

    assert response.status_code == 400
    message = response.json()["resources.gpu_model"][0]
    assert "deprecated" in message and A100 in message and H100 in message
    assert not Launch.objects.exists()
    assert not fake_mlflow.runs


def test_a_sweep_reads_gpu_model_as_gpu_product(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    body = {
        "project": "demo/demo",
        "template": "train",
        "strategy": "grid",
        "space": {"lr": [0.001, 0.01]},
        "max_trials": 2,
        "parallelism": 1,
        "resources": {"gpu_model": A100},
    }
    response = api_for(ada).post("/api/v1/sweeps/", body, format="json")

    assert response.status_code == 201, response.json()
    stored = Sweep.objects.get().resources
    assert stored["gpu_product"] == A100 and "gpu_model" not in stored


def test_a_template_stores_gpu_product_and_refuses_two_different_names(lin: User, team: Team) -> None:
    body = {
        "team": "demo",
        "slug": "big",
        "image": "python:3.12",
        "command": COMMAND,
        "default_resources": {"gpus": 1, "gpu_model": A100},
        "max_resources": {"gpus": 1},
    }
    response = api_for(lin).post("/api/v1/templates/", body, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["default_resources"] == {"gpus": 1, "gpu_product": A100}
    assert Template.objects.get(slug="big").default_resources == {"gpus": 1, "gpu_product": A100}

    pk = response.json()["id"]
    changed = {"default_resources": {"gpus": 1, "gpu_product": A100, "gpu_model": H100}}
    response = api_for(lin).patch(f"/api/v1/templates/{pk}/", changed, format="json")
    assert response.status_code == 400
    assert "default_resources.gpu_model" in response.json()
    assert Template.objects.get(slug="big").default_resources == {"gpus": 1, "gpu_product": A100}


@pytest.mark.parametrize(
    ("path", "method", "field"),
    [
        ("/api/v1/launches/", "post", "resources"),
        ("/api/v1/sweeps/", "post", "resources"),
        ("/api/v1/templates/", "post", "default_resources"),
        ("/api/v1/templates/{id}/", "patch", "max_resources"),
    ],
)
def test_the_schema_names_gpu_product_and_calls_gpu_model_deprecated(path: str, method: str, field: str) -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    described = schema["components"]["schemas"][name]["properties"][field]["description"]
    assert "gpu_product" in described and "nvidia.com/gpu.product" in described
    assert "Deprecated: gpu_model" in described


# --- the launch page ----------------------------------------------------------------------


def page_form(project: Project, **resources: str) -> dict[str, str]:
    return {"template": "train", "project": str(project.pk), "param_lr": "0.01", "cpu": "1", "memory": "1Gi"} | (
        resources
    )


def test_the_launch_page_offers_gpu_product_prefilled_from_the_template(
    ada: User, project: Project, team: Team
) -> None:
    make_template(team, "train", COMMAND, parameters=PARAMETERS, default_resources={"gpu_product": A100})
    response = client_for(ada).get(f"/launches/new/?template=train&project={project.pk}")

    assert response.status_code == 200
    form = response.context["form"]
    assert "gpu_product" in form.fields and "gpu_model" not in form.fields
    assert form["gpu_product"].initial == A100
    assert form.fields["gpu_product"].label == "GPU product"


@pytest.mark.parametrize("key", ["gpu_product", "gpu_model"])
def test_the_launch_page_stores_gpu_product_whichever_field_was_posted(
    key: str, ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = client_for(ada).post("/launches/new/", page_form(linked_project, **{key: A100}))

    assert response.status_code == 302, response.content.decode()
    stored = Launch.objects.get().resources
    assert stored["gpu_product"] == A100 and "gpu_model" not in stored


def test_the_launch_page_refuses_two_different_names_on_the_gpu_product_field(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = client_for(ada).post("/launches/new/", page_form(linked_project, gpu_product=A100, gpu_model=H100))

    assert response.status_code == 400
    assert "deprecated" in response.context["form"].errors["gpu_product"][0]
    assert not Launch.objects.exists()
    assert not fake_mlflow.runs


def test_a_launch_asked_for_by_the_old_name_selects_the_node_label(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow, fake_backend: FakeBackend
) -> None:
    fake_backend.gpus = 1  # the host has a GPU: only the name is under test
    response = launch_api(ada, {"gpus": 1, "gpu_model": A100})
    assert response.status_code == 201, response.json()

    pod = build_job_manifest(Launch.objects.get())["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": A100}


# --- the migration ------------------------------------------------------------------------

BEFORE = ("launches", "0008_sweep_environment_template_objective")
AFTER = ("launches", "0009_resources_gpu_product")


def migrate_to(target: tuple[str, str] | None) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_the_key_in_stored_rows_and_back(ada: User, linked_project: Project, team: Team) -> None:
    template = make_template(
        team,
        "train",
        COMMAND,
        default_resources={"gpus": 1, "gpu_product": A100},
        max_resources={"gpus": 2, "gpu_product": H100},
    )
    common = {"project": linked_project, "template": template, "created_by": ada}
    new_style = {"cpu": "1", "memory": "1Gi", "gpus": 1, "gpu_product": A100}
    launch = Launch.objects.create(backend="kubernetes", gpus=1, resources=new_style, **common)
    without_gpu = Launch.objects.create(backend="local", resources={"cpu": "1", "memory": "1Gi", "gpus": 0}, **common)
    sweep = Sweep.objects.create(
        strategy="grid", space={}, max_trials=1, parallelism=1, resources={**new_style, "workload": "sweep-1"}, **common
    )
    try:
        migrate_to(BEFORE)
        assert Launch.objects.values_list("resources", flat=True).get(pk=launch.pk) == {
            "cpu": "1",
            "memory": "1Gi",
            "gpus": 1,
            "gpu_model": A100,
        }
        old = Template.objects.values("default_resources", "max_resources").get(pk=template.pk)
        assert old == {
            "default_resources": {"gpus": 1, "gpu_model": A100},
            "max_resources": {"gpus": 2, "gpu_model": H100},
        }
        assert Sweep.objects.values_list("resources", flat=True).get(pk=sweep.pk)["gpu_model"] == A100
    finally:
        migrate_to(None)
    assert AFTER in MigrationExecutor(connection).loader.applied_migrations
    launch.refresh_from_db()
    template.refresh_from_db()
    sweep.refresh_from_db()
    without_gpu.refresh_from_db()
    assert launch.resources == new_style
    assert template.default_resources == {"gpus": 1, "gpu_product": A100}
    assert template.max_resources == {"gpus": 2, "gpu_product": H100}
    assert sweep.resources == {**new_style, "workload": "sweep-1"}
    assert without_gpu.resources == {"cpu": "1", "memory": "1Gi", "gpus": 0}


def test_the_migration_keeps_a_gpu_product_already_there() -> None:
    from importlib import import_module

    migration = import_module("apps.launches.migrations.0009_resources_gpu_product")
    both = {"gpu_product": A100, "gpu_model": H100}
    assert migration.renamed(both, "gpu_model", "gpu_product") == {"gpu_product": A100}
    empty_product = {"gpu_product": "", "gpu_model": H100}
    assert migration.renamed(empty_product, "gpu_model", "gpu_product") == {"gpu_product": H100}
    assert migration.renamed("not a dict", "gpu_model", "gpu_product") == "not a dict"

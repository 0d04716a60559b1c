"""One FilterSet per list, read by the page and the API alike: a bad value is a 400 naming the
field on both (never a 500, never silently ignored), and the schema lists every filter."""

from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

from apps.accounts.filters import TeamFilter
from apps.accounts.models import User
from apps.audit.filters import AuditFilter
from apps.core.filters import FilterSet
from apps.deployments.filters import DeploymentFilter
from apps.environments.filters import EnvironmentFilter
from apps.gpus.filters import GpuFilter
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.filters import LaunchFilter, SweepFilter, TemplateFilter
from apps.launches.models import Launch, Status
from apps.projects.filters import ProjectFilter
from apps.projects.models import Project
from apps.registry.filters import AliasHistoryFilter, ModelFilter, PromotionFilter
from tests.conftest import api_for, client_for

LIST_ENDPOINTS: dict[str, type[FilterSet]] = {
    "/api/v1/launches/": LaunchFilter,
    "/api/v1/sweeps/": SweepFilter,
    "/api/v1/templates/": TemplateFilter,
    "/api/v1/projects/": ProjectFilter,
    "/api/v1/teams/": TeamFilter,
    "/api/v1/audit/": AuditFilter,
    "/api/v1/gpus/": GpuFilter,
    "/api/v1/promotions/": PromotionFilter,
    "/api/v1/models/": ModelFilter,
    "/api/v1/models/{name}/aliases/history/": AliasHistoryFilter,
    "/api/v1/deployments/": DeploymentFilter,
    "/api/v1/environments/": EnvironmentFilter,
}

TOO_LONG = "x" * 300


@pytest.fixture
def launches(project: Project, ada: User, root: User) -> list[Launch]:
    template = launch_services.create_template(root, None, **SKLEARN_DIGITS)

    def launch(status: str) -> Launch:
        return Launch.objects.create(
            project=project,
            template=template,
            created_by=ada,
            status=status,
            backend="local",
            resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
        )

    return [launch(Status.RUNNING), launch(Status.FAILED), launch(Status.SUCCEEDED)]


@pytest.mark.parametrize("path", sorted(LIST_ENDPOINTS))
def test_the_schema_lists_every_filter_of_each_list_endpoint(path: str) -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"][path]["get"]
    documented = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert set(LIST_ENDPOINTS[path].base_filters) <= documented
    assert "400" in operation["responses"]


def test_every_list_view_with_a_filterset_is_in_the_schema_check() -> None:
    """A generic list endpoint that gains a FilterSet is checked above without anyone adding it."""
    from portal.urls import router

    with_filters = {
        f"/api/v1/{prefix}/" for prefix, viewset, _ in router.registry if getattr(viewset, "filterset_class", None)
    }
    assert with_filters <= set(LIST_ENDPOINTS)


@pytest.mark.parametrize(
    ("user", "path", "query", "field"),
    [
        ("ada", "/api/v1/launches/", {"status": "bogus"}, "status"),
        ("ada", "/api/v1/launches/", {"status": "running,bogus"}, "status"),
        ("ada", "/api/v1/launches/", {"project": "not a project"}, "project"),
        ("ada", "/api/v1/launches/", {"user": TOO_LONG}, "user"),
        ("ada", "/api/v1/sweeps/", {"project": "a/b/c"}, "project"),
        ("ada", "/api/v1/templates/", {"project": "?"}, "project"),
        ("ada", "/api/v1/projects/", {"backend": "slurm"}, "backend"),
        ("ada", "/api/v1/teams/", {"slug": TOO_LONG}, "slug"),
        ("root", "/api/v1/audit/", {"since": "yesterday"}, "since"),
        ("root", "/api/v1/audit/", {"until": "2025-02-30"}, "until"),
        ("root", "/api/v1/audit/", {"until": "9999-12-31"}, "until"),
        ("ada", "/api/v1/gpus/", {"allocated": "maybe"}, "allocated"),
        ("ada", "/api/v1/promotions/", {"status": "done"}, "status"),
        ("ada", "/api/v1/promotions/", {"awaiting": "you"}, "awaiting"),
        ("ada", "/api/v1/models/", {"project": "no such shape"}, "project"),
        ("ada", "/api/v1/deployments/", {"status": "sleeping"}, "status"),
        ("ada", "/api/v1/deployments/", {"project": "a/b/c"}, "project"),
        ("ada", "/api/v1/deployments/", {"model": TOO_LONG}, "model"),
        ("ada", "/api/v1/environments/", {"state": "sleeping"}, "state"),
        ("ada", "/api/v1/environments/", {"team": "Not a slug!"}, "team"),
        ("ada", "/api/v1/environments/", {"name": "A B"}, "name"),
        ("ada", "/api/v1/environments/", {"q": TOO_LONG}, "q"),
    ],
)
def test_a_bad_filter_value_is_a_400_naming_the_field(
    people: dict[str, User], project: Project, user: str, path: str, query: dict[str, str], field: str
) -> None:
    response = api_for(people[user]).get(path, query)
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize(
    ("user", "path", "query", "field"),
    [
        ("ada", "/launches/", {"status": "bogus"}, "status"),
        ("ada", "/launches/sweeps/", {"project": "a/b/c"}, "project"),
        ("ada", "/projects/", {"backend": "slurm"}, "backend"),
        ("ada", "/teams/", {"q": TOO_LONG}, "q"),
        ("root", "/audit/", {"since": "yesterday"}, "since"),
        ("ada", "/gpus/", {"allocated": "maybe"}, "allocated"),
        ("ada", "/gpus/idle/", {"history": "yes"}, "history"),
        ("ada", "/models/", {"status": "done"}, "status"),
        ("root", "/console/users/", {"q": TOO_LONG}, "q"),
        ("ada", "/environments/", {"state": "sleeping"}, "state"),
    ],
)
def test_a_bad_filter_value_on_a_page_shows_the_form_error_with_a_400(
    people: dict[str, User], project: Project, user: str, path: str, query: dict[str, str], field: str
) -> None:
    response = client_for(people[user]).get(path, query)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    form = response.context["filter"].form
    assert field in form.errors
    assert str(form.errors[field][0]) in response.content.decode().replace("&#x27;", "'")


def test_the_audit_export_refuses_a_bad_filter_value(root: User) -> None:
    response = client_for(root).get("/audit/export.csv", {"until": "someday"})
    assert response.status_code == 400
    assert "until" in response.content.decode()


def _statuses(rows: list[dict[str, Any]]) -> set[str]:
    return {row["status"] for row in rows}


def test_the_page_and_the_api_filter_launches_the_same_way(ada: User, launches: list[Launch]) -> None:
    for query, wanted in (
        ({"status": "live"}, {Status.RUNNING}),
        ({"status": "failed,succeeded"}, {Status.FAILED, Status.SUCCEEDED}),
        ({"status": "failed", "project": "demo/demo"}, {Status.FAILED}),
        ({"user": "lin"}, set()),
    ):
        api = api_for(ada).get("/api/v1/launches/", query)
        assert api.status_code == 200
        assert _statuses(api.json()["results"]) == wanted
        page = client_for(ada).get("/launches/", query)
        assert page.status_code == 200
        assert {launch.status for launch in page.context["page"].object_list} == wanted


def test_a_project_filter_naming_an_invisible_project_is_a_404(omar: User, launches: list[Launch]) -> None:
    assert api_for(omar).get("/api/v1/launches/", {"project": "demo/demo"}).status_code == 404
    assert client_for(omar).get("/launches/", {"project": "demo/demo"}).status_code == 404


def test_the_page_draws_the_filterset_form_with_the_chosen_values(ada: User, launches: list[Launch]) -> None:
    page = client_for(ada).get("/launches/", {"status": "failed"}).content.decode()
    assert 'name="status"' in page
    assert '<option value="failed" selected>' in page
    assert "No launch matches these filters." not in page
    empty = client_for(ada).get("/launches/", {"status": "cancelled"}).content.decode()
    assert "No launch matches these filters." in empty


def test_the_usage_report_reads_one_query_form_documented_in_the_schema() -> None:
    from apps.gpus.filters import UsageQuery

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/gpus/usage/"]["get"]
    assert set(UsageQuery.base_fields) <= {p["name"] for p in operation["parameters"]}
    assert "400" in operation["responses"]


@pytest.mark.parametrize("query", [{"end": "9999-12-31"}, {"start": "0001-01-01"}, {"group_by": "user"}])
def test_a_usage_period_out_of_range_is_a_400_on_the_page_and_the_api(
    lin: User, project: Project, query: dict[str, str]
) -> None:
    field = next(iter(query))
    api = api_for(lin).get("/api/v1/gpus/usage/", query)
    assert api.status_code == 400 and field in api.json()
    page = client_for(lin).get("/gpus/usage/", query)
    assert page.status_code == 400 and field in page.context["form"].errors

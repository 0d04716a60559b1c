"""Every runs, compare, run, model and promotion page and endpoint over the data zoo
(tests/tracking/zoo.py), as a member of the project: no 5xx, JSON that strict parsers
accept (no NaN/Infinity tokens), and the right numbers for each awkward case."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import Project
from apps.tracking import keys
from tests.conftest import MLFLOW_STORES, api_for, client_for
from tests.launches.conftest import eager_tasks  # noqa: F401 (a fixture)
from tests.tracking.conftest import link
from tests.tracking.zoo import CHILDREN, MANY_PARAMS, UNICODE_NAME, Zoo, seed_zoo

pytestmark = [pytest.mark.mlflow, pytest.mark.django_db]

RUNS_API = "/api/v1/runs/"
COMPARE_API = "/api/v1/runs/compare/"
PROMOTIONS = "/api/v1/promotions/"


@pytest.fixture(scope="module")
def zoo(mlflow_server: str) -> Zoo:
    return seed_zoo(mlflow_server)


@pytest.fixture
def zoo_project(project: Project, zoo: Zoo, mlflow_up: str) -> Project:
    """demo/demo linked to the zoo's experiment, the portal pointed at the real server."""
    return link(project, zoo.experiment_id)


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (strict parsers refuse it)")


def strict_json(response: Any) -> Any:
    """The body as JSON, refusing the NaN/Infinity/-Infinity tokens Python's json writes."""
    return json.loads(response.content, parse_constant=_refuse)


def check(response: Any, url: str) -> Any:
    """No 5xx; a JSON body must be strict JSON."""
    assert response.status_code < 500, (url, response.status_code, response.content[:500])
    if response.get("Content-Type", "").startswith("application/json"):
        strict_json(response)
    return response


def run_page(run_id: str) -> str:
    return reverse("tracking:run", kwargs={"team": "demo", "slug": "demo", "run_id": run_id})


def runs_page() -> str:
    return reverse("tracking:runs", kwargs={"team": "demo", "slug": "demo"})


def compare_body(user: User, zoo: Zoo) -> dict[str, Any]:
    url = COMPARE_API
    response = check(api_for(user).get(url, {"run_ids": ",".join(zoo.active.values())}), url)
    assert response.status_code == 200
    body: dict[str, Any] = strict_json(response)
    return body


def test_every_runs_and_compare_page_and_endpoint_answers_without_a_5xx(
    ada: User, zoo_project: Project, zoo: Zoo
) -> None:
    web, api = client_for(ada), api_for(ada)
    ids = ",".join(zoo.active.values())
    pages: list[tuple[str, dict[str, Any]]] = [
        (runs_page(), {}),
        (runs_page(), {"params": ["optim/name", "größe", "p0001"], "metrics": ["loss/train", "Genauigkeit_ü", "loss"]}),
        (runs_page(), {"order_by": "metrics.loss ASC"}),
        (runs_page(), {"order_by": "metrics.score DESC"}),
        (runs_page(), {"order_by": "metrics.`loss/train` DESC"}),
        (runs_page(), {"filter": "metrics.score > 0.5"}),
        (runs_page(), {"max_results": 3}),
        (reverse("tracking:compare"), {"run_ids": ids}),
        (reverse("tracking:compare"), {"run_ids": ids, "format": "csv"}),
        (reverse("tracking:compare"), {"run_ids": ids, "dir": "score:min,loss:max"}),
        (reverse("tracking:compare"), {"run_ids": ids, "pc": "score", "sx": "lr", "sy": "loss"}),
        (reverse("tracking:compare"), {"run_ids": zoo.runs["stepless"]}),
        (reverse("tracking:compare"), {"run_ids": zoo.runs["single"]}),
        (reverse("tracking:compare"), {"run_ids": zoo.runs["empty"]}),
        *((run_page(run_id), {}) for run_id in zoo.runs.values()),
    ]
    for url, query in pages:
        response = check(web.get(url, query), url)
        assert response.status_code in (200, 404), (url, query, response.status_code)
    api_calls: list[tuple[str, dict[str, Any]]] = [
        (RUNS_API, {"project": "demo/demo"}),
        (RUNS_API, {"project": "demo/demo", "order_by": "metrics.loss DESC", "max_results": 1000}),
        (RUNS_API, {"project": "demo/demo", "filter": "metrics.score > 0.5"}),
        (COMPARE_API, {"run_ids": ids}),
        (COMPARE_API, {"run_ids": ids, "metrics": "loss,score,epoch_loss", "max_points": 4}),
    ]
    for url, query in api_calls:
        response = check(api.get(url, query), url)
        assert response.status_code == 200, (url, query, strict_json(response))
    # Paging through the table: every page answers, every active run is met once.
    seen: list[str] = []
    token = ""
    while True:
        body = strict_json(
            check(api.get(RUNS_API, {"project": "demo/demo", "max_results": "4", "page_token": token}), RUNS_API)
        )
        seen += [run["run_id"] for run in body["runs"]]
        token = body["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(zoo.active.values())


def test_the_deleted_run_is_not_found_and_the_restored_one_is_back(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    assert client_for(ada).get(run_page(zoo.runs["deleted"])).status_code == 404
    assert client_for(ada).get(run_page(zoo.runs["restored"])).status_code == 200
    listed = {run["run_id"] for run in strict_json(api_for(ada).get(RUNS_API, {"project": "demo/demo"}))["runs"]}
    assert zoo.runs["restored"] in listed and zoo.runs["deleted"] not in listed
    body = strict_json(api_for(ada).get(COMPARE_API, {"run_ids": f"{zoo.runs['finite']},{zoo.runs['deleted']}"}))
    assert body["missing"] == [{"run_id": zoo.runs["deleted"], "reason": "deleted"}]


def test_infinities_and_nan_never_win_best(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    best = compare_body(ada, zoo)["best"]
    # score is "higher is better": +inf (posinf) and +1.797e308 (sentinel) must not win.
    assert best["score"]["run_id"] == zoo.runs["finite"] and best["score"]["value"] == pytest.approx(0.9)
    # loss is "lower is better": -inf (neginf) and -1.797e308 (sentinel) must not win.
    assert best["loss"]["run_id"] == zoo.runs["finite"] and best["loss"]["value"] == pytest.approx(0.05)
    page = client_for(ada).get(reverse("tracking:compare"), {"run_ids": ",".join(zoo.active.values())})
    assert page.status_code == 200
    assert {key: found.run_id for key, found in page.context["best"].items()}["score"] == zoo.runs["finite"]


def test_nan_and_infinities_are_shown_as_such(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    runs = {run["name"]: run for run in strict_json(api_for(ada).get(RUNS_API, {"project": "demo/demo"}))["runs"]}
    assert runs["nan"]["metrics"]["loss"] == "NaN"  # a logged NaN, not "never logged" (null)
    assert runs["posinf"]["metrics"]["score"] == "Infinity"
    assert runs["sentinel"]["metrics"]["score"] == "Infinity"  # MLflow's +1.797e308 is +inf
    assert runs["sentinel"]["metrics"]["loss"] == "-Infinity"
    assert "score" not in runs["empty"]["metrics"]
    nan_page = client_for(ada).get(run_page(zoo.runs["nan"])).content.decode()
    assert ">NaN<" in nan_page
    sentinel_page = client_for(ada).get(run_page(zoo.runs["sentinel"])).content.decode()
    assert ">inf<" in sentinel_page and ">-inf<" in sentinel_page
    assert "1.79769e+308" not in sentinel_page
    table = client_for(ada).get(runs_page(), {"metrics": ["loss", "score"]}).content.decode()
    assert "1.79769e+308" not in table and ">NaN<" in table


def test_the_csv_tells_nan_from_never_logged_and_carries_tags(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    ids = [zoo.runs[label] for label in ("finite", "nan", "empty", "unicode", "child-1")]
    response = client_for(ada).get(reverse("tracking:compare"), {"run_ids": ",".join(ids), "format": "csv"})
    rows = {row["run_id"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert rows[zoo.runs["nan"]]["metrics.loss"] == "NaN"
    assert rows[zoo.runs["empty"]]["metrics.loss"] == ""  # never logged
    assert rows[zoo.runs["finite"]]["tag.team.note"] == "baseline"
    assert rows[zoo.runs["unicode"]]["tag.team/owner"] == "jürgen"
    assert rows[zoo.runs["child-1"]]["tag.mlflow.parentRunId"] == zoo.runs["parent"]
    assert rows[zoo.runs["finite"]]["tag.mlflow.parentRunId"] == ""
    header = next(csv.reader(io.StringIO(response.content.decode())))
    assert "tag.mlflow.source.type" not in header and "tag.mlflow.runName" in header


def test_the_stepless_metric_and_the_late_point_are_in_the_histories(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    body = compare_body(ada, zoo)
    stepless = body["series"]["epoch_loss"][zoo.runs["stepless"]]
    assert len(stepless["values"]) == 5 and set(stepless["steps"]) == {0}
    assert body["best"]["epoch_loss"]["run_id"] == zoo.runs["stepless"]
    late = next(run for run in body["runs"] if run["run_id"] == zoo.runs["late"])
    assert late["summary"]["loss"]["max"] == pytest.approx(9.0)
    assert late["summary"]["loss"]["points"] == 21
    page = client_for(ada).get(run_page(zoo.runs["stepless"]))
    assert [key for key, _ in page.context["latest_rows"]] == ["epoch_loss"]


def test_nested_runs_are_grouped_under_their_parent(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    def family(order_by: str) -> list[tuple[str, int]]:
        page = client_for(ada).get(runs_page(), {"max_results": "100", "order_by": order_by})
        found = next(f for f in page.context["families"] if f[0]["row"].run.run_id == zoo.runs["parent"])
        assert found[0]["row"].children == 4
        return [(r["row"].run.name, r["row"].depth) for r in found]

    # Each generation keeps the table's order; descendants follow their parent.
    oldest_first = [("parent", 0), ("child-1", 1), ("grandchild", 2), ("child-2", 1), ("child-3", 1)]
    assert family("attributes.start_time ASC") == oldest_first
    newest_first = [("parent", 0), ("child-3", 1), ("child-2", 1), ("child-1", 1), ("grandchild", 2)]
    assert family("attributes.start_time DESC") == newest_first
    parent = client_for(ada).get(run_page(zoo.runs["parent"]))
    assert [child.name for child, _, _ in parent.context["child_runs"]] == list(CHILDREN)
    assert parent.context["child_metrics"] == ["loss", "score"]
    child = client_for(ada).get(run_page(zoo.runs["child-1"]))
    assert child.context["parent_run"] == {"run_id": zoo.runs["parent"], "name": "parent"}


def test_the_thousand_param_run_renders_and_its_keys_are_offered(ada: User, zoo_project: Project, zoo: Zoo) -> None:
    page = client_for(ada).get(run_page(zoo.runs["many"]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('<th scope="row">p') == MANY_PARAMS
    # Older runs' keys are offered by the picker though the first page holds none of them.
    table = client_for(ada).get(runs_page(), {"max_results": 1})
    assert len(table.context["rows"]) == 1
    assert "p1999" in table.context["all_params"] and "Genauigkeit_ü" in table.context["all_metrics"]
    long = client_for(ada).get(run_page(zoo.runs["long"]))
    assert long.status_code == 200 and ("long value " * 600)[:6000] in long.content.decode()
    unicode = client_for(ada).get(run_page(zoo.runs["unicode"]))
    assert unicode.status_code == 200 and "Läuf/ü &lt;b&gt;1&lt;/b&gt;" in unicode.content.decode()
    assert UNICODE_NAME in [
        run["name"] for run in strict_json(api_for(ada).get(RUNS_API, {"project": "demo/demo"}))["runs"]
    ]


@pytest.mark.usefixtures("eager_tasks")
def test_the_nan_version_walks_the_model_and_promotion_pages(
    ada: User,
    lin: User,
    zoo_project: Project,
    zoo: Zoo,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    name = zoo.model
    web_ada, web_lin, api_ada, api_lin = client_for(ada), client_for(lin), api_for(ada), api_for(lin)
    for url in (
        reverse("registry:project", kwargs={"team": "demo", "slug": "demo"}),
        reverse("registry:model", kwargs={"name": name}),
        f"{reverse('registry:request-create', kwargs={'name': name})}?version={zoo.version}",
    ):
        response = check(web_ada.get(url), url)
        assert response.status_code == 200, url
    for url in (
        "/api/v1/models/?project=demo/demo",
        f"/api/v1/models/{name}/",
        f"/api/v1/models/{name}/aliases/history/",
    ):
        response = check(api_ada.get(url), url)
        assert response.status_code == 200, (url, response.content[:300])

    def promote(version: int) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            asked = check(
                api_ada.post(
                    PROMOTIONS,
                    {"model": name, "version": version, "alias": "champion", "justification": f"v{version}"},
                    format="json",
                ),
                PROMOTIONS,
            )
        assert asked.status_code == 201, asked.content[:500]
        pk = int(strict_json(asked)["id"])
        for url in (f"{PROMOTIONS}{pk}/",):
            assert check(api_lin.get(url), url).status_code == 200
        assert check(web_lin.get(f"/models/requests/{pk}/"), "request page").status_code == 200
        with django_capture_on_commit_callbacks(execute=True):
            approved = check(api_lin.post(f"{PROMOTIONS}{pk}/approve/", {"comment": "ok"}, format="json"), "approve")
        assert approved.status_code == 200, approved.content[:500]
        return pk

    promote(zoo.finite_version)
    promote(zoo.version)  # the NaN version
    url = f"/api/v1/models/{name}/aliases/champion/rollback/"
    with django_capture_on_commit_callbacks(execute=True):
        back = check(api_lin.post(url, {"justification": "NaN loss", "emergency": True}, format="json"), url)
    assert back.status_code == 201, back.content[:500]
    assert check(api_ada.get(f"/api/v1/models/{name}/aliases/history/"), "history").status_code == 200
    assert check(web_ada.get(reverse("registry:model", kwargs={"name": name})), "model").status_code == 200
    assert check(api_ada.get(PROMOTIONS), PROMOTIONS).status_code == 200


def test_the_store_and_the_rest_api_give_the_same_keys(zoo_project: Project, zoo: Zoo, settings: Any) -> None:
    """The column picker's keys read from MLflow's backend store equal those read over
    REST, on the zoo (2,000 params, unicode keys, deleted runs left out)."""
    settings.PLINTH_MLFLOW_STORE_URI = MLFLOW_STORES[settings.MLFLOW_TRACKING_URI]
    from_store = keys.store_keys(zoo.experiment_id)
    from_rest = keys.scan_keys(zoo.experiment_id)
    assert from_store is not None
    assert from_store == from_rest
    assert len(from_rest.params) > MANY_PARAMS and "Genauigkeit_ü" in from_rest.metrics
    settings.PLINTH_MLFLOW_STORE_URI = ""
    assert keys.store_keys(zoo.experiment_id) is None

"""A model version whose run logged NaN (or inf), registered in the real `mlflow server`
with the plain MLflow client: the model API answers strict JSON, the version can be
requested, approved, applied and rolled back (the lead's emergency rollback included), the
evidence keeps the NaN, and a metric gate on it refuses with a reason instead of crashing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from apps.accounts.models import User
from apps.projects.models import Project
from apps.registry import services
from apps.registry.models import PromotionRequest, Status
from tests.conftest import api_for, client_for
from tests.registry.conftest import Registered

pytestmark = [pytest.mark.mlflow, pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]

PROMOTIONS = "/api/v1/promotions/"
NAN, INF = float("nan"), float("inf")


def strict(body: bytes) -> Any:
    """Parse as a strict JSON parser would: the NaN/Infinity tokens are refused."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(body, parse_constant=refuse)


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks: Any) -> Any:
    return lambda: django_capture_on_commit_callbacks(execute=True)


def ask(user: User, name: str, version: int) -> Any:
    return api_for(user).post(
        PROMOTIONS,
        {"model": name, "version": version, "alias": "champion", "justification": f"v{version} please"},
        format="json",
    )


def promote(asker: User, approver: User, name: str, version: int, run_on_commit: Any) -> PromotionRequest:
    with run_on_commit():
        asked = ask(asker, name, version)
    assert asked.status_code == 201, asked.content
    strict(asked.content)
    pk = int(asked.json()["id"])
    with run_on_commit():
        approved = api_for(approver).post(f"{PROMOTIONS}{pk}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200, approved.content
    strict(approved.content)
    return PromotionRequest.objects.get(pk=pk)


def test_the_model_api_answers_strict_json_for_a_nan_metric(
    vic: User, project: Project, registered: Registered
) -> None:
    name = registered.model("demo/demo", [{"loss": NAN, "accuracy": INF, "f1": 0.5}])
    response = api_for(vic).get(f"/api/v1/models/{name}/")
    assert response.status_code == 200
    body = strict(response.content)
    metrics = body["versions"][0]["run"]["metrics"]
    # NaN as logged; +inf, which MLflow stores as 1.797e308, as the infinity it stands for.
    assert metrics == {"loss": "NaN", "accuracy": "Infinity", "f1": 0.5}
    listed = api_for(vic).get("/api/v1/models/", {"project": "demo/demo"})
    assert listed.status_code == 200
    strict(listed.content)


def test_a_nan_version_is_requested_approved_applied_and_rolled_back_in_an_emergency(
    ada: User, lin: User, vic: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"loss": NAN, "accuracy": 0.9}, {"loss": NAN, "accuracy": 0.95}])
    first = promote(ada, lin, name, 1, run_on_commit)
    second = promote(ada, lin, name, 2, run_on_commit)
    assert (first.status, second.status) == (Status.APPLIED, Status.APPLIED)
    assert registered.alias(name, "champion") == 2
    # The evidence was stored, and reads back as the float NaN it was.
    second.refresh_from_db()
    assert math.isnan(second.evidence["candidate"]["metrics"]["loss"])
    assert math.isnan(second.evidence["holder"]["metrics"]["loss"])
    assert second.evidence["candidate"]["metrics"]["accuracy"] == pytest.approx(0.95)
    detail = api_for(vic).get(f"{PROMOTIONS}{second.pk}/")
    assert detail.status_code == 200
    assert strict(detail.content)["evidence"]["candidate"]["metrics"]["loss"] == "NaN"
    page = client_for(vic).get(f"/models/requests/{second.pk}/")
    assert page.status_code == 200
    assert [r["delta"] for r in page.context["rows"] if r["metric"] == "loss"] == [None]
    assert '<td class="num">NaN</td>' in page.content.decode() and ">nan<" not in page.content.decode()
    model_page = client_for(vic).get(f"/models/registered/{name}/")
    assert model_page.status_code == 200
    assert '<td class="num">NaN</td>' in model_page.content.decode()

    with run_on_commit():
        response = api_for(lin).post(
            f"/api/v1/models/{name}/aliases/champion/rollback/",
            {"justification": "v2 is down", "emergency": True},
            format="json",
        )
    assert response.status_code == 201, response.content
    body = strict(response.content)
    rollback = PromotionRequest.objects.get(pk=body["id"])
    assert (rollback.status, rollback.version, rollback.emergency) == (Status.APPLIED, 1, True)
    assert registered.alias(name, "champion") == 1
    assert body["evidence"]["candidate"]["metrics"]["loss"] == "NaN"


def test_a_gate_on_a_nan_metric_refuses_with_a_reason(
    ada: User, lin: User, root: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"loss": 0.4}, {"loss": NAN}, {"loss": INF}])
    promote(ada, lin, name, 1, run_on_commit)
    services.update_policy(root, project, gate_metric="loss", gate_comparison="lte")
    for version, shown in ((2, "NaN"), (3, "inf")):
        asked = ask(ada, name, version)
        assert asked.status_code == 201, asked.content
        pk = asked.json()["id"]
        refused = api_for(lin).post(f"{PROMOTIONS}{pk}/approve/", {"comment": "ok"}, format="json")
        assert refused.status_code == 409, refused.content
        reason = json.dumps(strict(refused.content))
        assert f"loss of version {version} is {shown}" in reason
        assert PromotionRequest.objects.get(pk=pk).status == Status.PENDING
        page = client_for(lin).get(f"/models/requests/{pk}/")
        assert page.status_code == 200 and 'data-gate="failed"' in page.content.decode()
    assert registered.alias(name, "champion") == 1


def test_a_holder_with_a_nan_metric_leaves_nothing_to_beat(
    ada: User, lin: User, root: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": NAN}, {"accuracy": 0.7}])
    promote(ada, lin, name, 1, run_on_commit)
    services.update_policy(root, project, gate_metric="accuracy", gate_comparison="gte")
    second = promote(ada, lin, name, 2, run_on_commit)
    assert second.status == Status.APPLIED
    assert registered.alias(name, "champion") == 2

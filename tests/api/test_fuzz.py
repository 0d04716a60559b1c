"""The OpenAPI schema is the truth: schemathesis generates requests from the schema — valid
ones and invalid ones — and sends them to the app in-process (WSGI), signed in with a token
as a platform admin and as a member, MLflow down (the suite's default).

Every answer must be one the schema documents for that operation (status code, content type
and, for JSON, the body's shape), and never a 5xx other than a documented 503 (MLflow or
the cluster unreachable). Half the generated paths (and `project` filters) are pointed at
objects that exist, so the fuzzing gets past the lookups to the validation and the
services. Nothing is skipped: a state change only writes rows inside the test's
transaction, and the work it would start (Celery tasks on commit) never runs there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.accounts import services as account_services
from apps.accounts.models import User
from apps.deployments.models import Deployment, Revision
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status
from apps.projects.models import ExperimentState, Project

CONFIG = schemathesis.Config.from_dict(
    {
        # Explicit examples and the schema-driven fuzzing; the "coverage" phase (every
        # boundary of every field) would take minutes on this many operations.
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": False}, "fuzzing": {"enabled": True}},
        "generation": {"mode": "all"},
    }
)
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True), config=CONFIG)
schema.app = get_wsgi_application()

# Path values of objects that exist, per path prefix; filled by the `world` fixture (the
# hooks below run while the test runs, after its fixtures).
KNOWN: dict[str, Any] = {}


def _known(path: str, params: Any) -> Any:
    if not isinstance(params, dict):
        return params
    named = dict(params)
    for key in named:
        if key == "id":
            prefix = next(
                (p for p in ("launches", "sweeps", "templates", "projects", "deployments") if f"/{p}/" in path), ""
            )
            named[key] = KNOWN.get(prefix, named[key])
        elif key in ("slug", "team_slug"):
            named[key] = "demo"
        elif key == "username":
            named[key] = "ada"
        elif key == "name":
            named[key] = "digits"
        elif key == "alias":
            named[key] = "champion"
    return named


@schema.hook
def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
    path = context.operation.path if context.operation is not None else ""
    return st.tuples(strategy, st.booleans()).map(lambda drawn: _known(path, drawn[0]) if drawn[1] else drawn[0])


# Query and body fields that name objects: the values of objects that exist.
NAMES = {"project": "demo/demo", "template": "sklearn-digits", "team": "demo", "model": "digits"}


def _name_objects(drawn: tuple[Any, bool]) -> Any:
    values, real = drawn
    if real and isinstance(values, dict):
        return {**values, **{key: NAMES[key] for key in values if key in NAMES}}
    return values


@schema.hook
def before_generate_query(context: Any, strategy: Any) -> Any:
    return st.tuples(strategy, st.booleans()).map(_name_objects)


@schema.hook
def before_generate_body(context: Any, strategy: Any) -> Any:
    return st.tuples(strategy, st.booleans()).map(_name_objects)


def no_server_error_but_a_dependency_down(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 5xx is a bug, except 503: MLflow or the cluster is down (the status code check
    then requires that the operation documents its 503)."""
    if response.status_code == 503:
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error_but_a_dependency_down,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def world(people: dict[str, User], project: Project) -> Iterator[None]:
    """Team demo with its project (linked to MLflow experiment 1), a global template,
    one of ada's launches and a deployment serving one revision."""
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    template = launch_services.create_template(people["root"], None, **SKLEARN_DIGITS)
    launch = Launch.objects.create(
        project=project,
        template=template,
        created_by=people["ada"],
        status=Status.RUNNING,
        backend="local",
        parameters={"epochs": 20},
        resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
        mlflow_run_id="run-of-ada",
        mlflow_experiment_id="1",
    )
    deployment = Deployment.objects.create(
        project=project, name="digits-api", model_name="digits", backend="local", created_by=people["ada"]
    )
    Revision.objects.create(deployment=deployment, number=1, version=1, status="serving", traffic=100)
    KNOWN.update(launches=launch.pk, templates=template.pk, projects=project.pk, deployments=deployment.pk)
    yield
    KNOWN.clear()


@pytest.fixture(params=["root", "ada"])
def token(request: pytest.FixtureRequest, people: dict[str, User], world: None, settings: Any) -> Iterator[str]:
    """A token of the platform admin (root) or of a member of team demo (ada)."""
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    _, key = account_services.create_api_token(people[request.param], name="fuzz")
    # As Django's test client does: a request's end must not close the connection that
    # holds the test's transaction (on PostgreSQL it would).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield key
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_documented_and_none_is_a_server_error(case: Any, token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)

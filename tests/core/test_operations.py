"""/healthz, /readyz, the status page, request ids in responses, logs and audit events."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.core.logging import JsonFormatter, RequestIdFilter
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_healthz_answers_without_touching_dependencies(client: object) -> None:
    response = client.get("/healthz")  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_stays_200_while_mlflow_is_down(client: object) -> None:
    response = client.get("/readyz")  # type: ignore[attr-defined]
    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert "mlflow" not in checks


def test_readiness_is_503_when_the_database_does_not_answer(client: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper

    def refuse(self: object) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(BaseDatabaseWrapper, "cursor", refuse)
    response = client.get("/readyz")  # type: ignore[attr-defined]
    assert response.status_code == 503
    database = response.json()["checks"]["database"]
    assert (database["ok"], database["detail"]) == (False, "database is gone")


def test_the_full_check_is_503_and_names_mlflow_when_it_is_down(client: object) -> None:
    response = client.get("/readyz?full=1")  # type: ignore[attr-defined]
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["broker"]["ok"] is True
    assert checks["mlflow"]["ok"] is False
    assert "unreachable" in checks["mlflow"]["detail"]


@pytest.mark.mlflow
def test_readyz_is_200_when_everything_answers(client: object, mlflow_up: str) -> None:
    response = client.get("/readyz?full=1")  # type: ignore[attr-defined]
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ok"


def test_every_response_carries_a_request_id_and_a_sane_incoming_one_is_kept(client: object) -> None:
    fresh = client.get("/healthz")  # type: ignore[attr-defined]
    assert len(fresh["X-Request-ID"]) == 32
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="trace-abc-123")  # type: ignore[attr-defined]
    assert kept["X-Request-ID"] == "trace-abc-123"
    hostile = client.get("/healthz", HTTP_X_REQUEST_ID="x" * 500 + "<script>")  # type: ignore[attr-defined]
    assert hostile["X-Request-ID"] != "x" * 500 + "<script>"


def test_audit_events_record_the_request_id_and_ip(lin: User, vic: User) -> None:
    vic.memberships.all().delete()
    response = client_for(lin).post(
        "/teams/demo/members/",
        {"username": "vic", "role": "viewer"},
        HTTP_X_REQUEST_ID="req-42",
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(verb="team.member_added")
    assert (event.request_id, event.ip, event.actor_label) == ("req-42", "10.1.2.3", "lin")


def test_log_lines_are_json_with_the_request_id() -> None:
    from apps.core import context

    record = logging.LogRecord("plinth.test", logging.INFO, __file__, 1, "launched %s", ("x",), None)
    with context.bind("req-7"):
        RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["request_id"], line["level"]) == ("launched x", "req-7", "INFO")


def test_the_status_page_is_for_platform_admins(root: User, lin: User) -> None:
    assert client_for(lin).get("/status/").status_code == 403
    response = client_for(root).get("/status/")
    assert response.status_code == 200
    names = [c.name for c in response.context["checks"]]
    assert names == ["database", "broker", "worker", "mlflow", "cluster", "reconciler", "cluster rate limit"]
    by_name = {c.name: c for c in response.context["checks"]}
    assert by_name["database"].ok and not by_name["mlflow"].ok
    assert '<td>mlflow</td><td><span class="state state-failed">down</span>' in response.content.decode()
    assert "No worker has ever answered" in by_name["worker"].detail
    assert "not configured" in by_name["cluster"].detail


def test_the_status_fragment_polls_with_htmx(root: User) -> None:
    response = client_for(root).get("/status/", headers={"HX-Request": "true", "HX-Target": "checks"})
    body = response.content.decode()
    assert response.status_code == 200 and body.lstrip().startswith('<section id="checks"')
    assert "<html" not in body and 'hx-trigger="every 10s"' in body
    # Another htmx request on the page (no known target) gets the page, as without htmx.
    assert "<html" in client_for(root).get("/status/", headers={"HX-Request": "true"}).content.decode()


def _deploy_check(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "DJANGO_"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = _deploy_check(
        {
            "PLINTH_ENV": "production",
            "PLINTH_SECRET_KEY": "a-real-secret-" + "k" * 50,
            "PLINTH_ALLOWED_HOSTS": "plinth.example.com",
            "PLINTH_DATA_DIR": str(tmp_path),
        }
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = _deploy_check({"PLINTH_ENV": "production", "PLINTH_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "PLINTH_SECRET_KEY" in result.stderr


def test_the_secret_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "s" * 50 + "\n")
    result = _deploy_check(
        {
            "PLINTH_ENV": "production",
            "PLINTH_SECRET_KEY_FILE": str(secret),
            "PLINTH_ALLOWED_HOSTS": "plinth.example.com",
            "PLINTH_DATA_DIR": str(tmp_path),
        }
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_page_loads_third_party_code_from_a_cdn(ada: User) -> None:
    client = client_for(ada)
    for url in ("/", "/teams/demo/", "/api/v1/docs/"):
        body = client.get(url).content.decode()
        assert "://cdn" not in body and "jsdelivr" not in body and "unpkg" not in body, url
    assert "/static/vendor/htmx.min.js" in client.get("/").content.decode()

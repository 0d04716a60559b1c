"""The inference gateway, through the test client, in front of small model servers that
speak MLflow's scoring protocol (ThreadingHTTPServers of this test; the real scoring server
is in test_serving_local.py): who may call, what each refusal says, how the traffic splits,
what passes through, and what gets counted."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts import services as account_services
from apps.deployments import gateway, services, stats
from apps.deployments.models import LATENCY_BUCKETS_MS, RequestSample, RequestStats, RevisionStatus
from tests.conftest import _free_port
from tests.deployments.conftest import add_revision

COLUMNS = ["a", "b"]


class ModelServer:
    """A stand-in for one revision's `mlflow models serve`: POST /invocations answers
    {"predictions": [<version>, …]} for a `dataframe_split` with columns a and b, and a 400
    in MLflow's shape ({"error_code", "message"}) for anything else; `fail` makes it
    answer 500 like a model that raises."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.fail = False
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, answer = server.answer(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.fail:
            return 500, {"error_code": "INTERNAL_ERROR", "message": "the model raised ZeroDivisionError"}
        try:
            frame = json.loads(body)["dataframe_split"]
        except (ValueError, KeyError, TypeError):
            return 400, {"error_code": "BAD_REQUEST", "message": "Invalid input. Ensure that input is a valid JSON"}
        if frame.get("columns") != COLUMNS:
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Model is missing inputs {COLUMNS}"}
        return 200, {"predictions": [self.version] * len(frame["data"])}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[dict[int, ModelServer]]:
    made = {version: ModelServer(version) for version in (1, 2)}
    yield made
    for server in made.values():
        server.close()


@pytest.fixture(autouse=True)
def _fresh_gateway() -> Iterator[None]:
    """Each test routes from the database, with empty statistics buffers."""
    gateway.clear_routes()
    stats.discard()
    yield
    gateway.clear_routes()
    stats.discard()


@pytest.fixture
def serving(deployment: Any, servers: dict[int, ModelServer]) -> Any:
    """digits-api serving version 1 (100 %) from its model server."""
    add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100, endpoint=servers[1].endpoint)
    return deployment


def token_of(user: Any) -> str:
    return account_services.create_api_token(user, name="gateway test", number_if_taken=True)[1]


def call(secret: str | None, body: Any = None, path: str = "/serve/demo/demo/digits-api/invocations") -> Any:
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body or frame())
    return Client().post(path, data=data, content_type="application/json", **headers)


def frame(rows: int = 2) -> dict[str, Any]:
    return {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0]] * rows}}


# --- who may call ---------------------------------------------------------------------------
def test_it_answers_a_member_with_the_predictions_and_the_version(serving: Any, ada: Any) -> None:
    response = call(token_of(ada), frame(3))
    assert response.status_code == 200, response.content
    assert response.json() == {"predictions": [1, 1, 1]}
    assert response["X-Plinth-Model-Version"] == "1"
    assert response["X-Plinth-Revision"] == "1"


def test_it_takes_the_api_keyword_token_too(serving: Any, lin: Any) -> None:
    client = Client()
    response = client.post(
        "/serve/demo/demo/digits-api/invocations",
        data=json.dumps(frame()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token_of(lin)}",
    )
    assert response.status_code == 200


def test_it_refuses_anonymous_callers_with_401(serving: Any) -> None:
    response = call(None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization" in response.json()["detail"]


def test_it_refuses_an_unknown_token_with_401(serving: Any) -> None:
    assert call("not-a-token").status_code == 401


def test_it_refuses_a_revoked_api_token_with_401(serving: Any, ada: Any) -> None:
    token, key = account_services.create_api_token(ada, name="soon revoked")
    account_services.revoke_api_token(ada, token)
    response = call(key)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_it_refuses_an_expired_token_and_a_deactivated_account(serving: Any, ada: Any, lin: Any) -> None:
    token, key = account_services.create_api_token(ada, name="short", expires_at=timezone.now() + timedelta(hours=1))
    type(token).objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = call(key)
    assert (response.status_code, "expired" in response.json()["detail"]) == (401, True)
    lins = token_of(lin)
    assert call(lins).status_code == 200
    type(lin).objects.filter(pk=lin.pk).update(is_active=False)  # no signal: as from another process
    gateway.clear_routes()
    response = call(lins)
    assert (response.status_code, "deactivated" in response.json()["detail"]) == (401, True)


# --- remembered callers -----------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(gateway, "clock", clock)
    return clock


def test_a_caller_let_through_passes_without_a_query_until_the_ttl(
    serving: Any, ada: Any, fake_clock: FakeClock, django_assert_num_queries: Any
) -> None:
    key = token_of(ada)
    assert call(key).status_code == 200  # reads the route and checks the token
    with django_assert_num_queries(0):
        assert call(key).status_code == 200
    fake_clock.now += gateway.CACHE_SECONDS + 0.1  # the route is read again, the caller not
    with django_assert_num_queries(2):
        assert call(key).status_code == 200
    fake_clock.now += gateway.CREDENTIAL_CACHE_SECONDS
    with django_assert_num_queries(3):  # the route (2) and the token (1)
        assert call(key).status_code == 200


def test_a_token_revoked_elsewhere_is_refused_after_the_ttl(serving: Any, ada: Any, fake_clock: FakeClock) -> None:
    token, key = account_services.create_api_token(ada, name="revoked elsewhere")
    assert call(key).status_code == 200
    # Another process revokes it: this one learns of it when what it remembered expires.
    type(token).objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    fake_clock.now += gateway.CREDENTIAL_CACHE_SECONDS - 0.5
    assert call(key).status_code == 200
    fake_clock.now += 1.0
    response = call(key)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_token_revoked_in_this_process_is_refused_at_once(serving: Any, ada: Any, fake_clock: FakeClock) -> None:
    token, key = account_services.create_api_token(ada, name="revoked here")
    assert call(key).status_code == 200
    account_services.revoke_api_token(ada, token)
    assert call(key).status_code == 401


def test_a_demoted_member_is_refused_after_the_ttl(serving: Any, ada: Any, fake_clock: FakeClock) -> None:
    from apps.accounts.models import Membership

    key = token_of(ada)
    assert call(key).status_code == 200
    Membership.objects.filter(user=ada, team=serving.project.team).update(role="viewer")
    fake_clock.now += gateway.CREDENTIAL_CACHE_SECONDS + 0.1
    assert call(key).status_code == 403


def test_a_check_that_overlaps_a_revocation_is_not_remembered(
    serving: Any, ada: Any, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = token_of(ada)
    real = gateway.verify_api_token

    def revoked_meanwhile(secret: str, **kwargs: Any) -> Any:
        token = real(secret, **kwargs)  # read while the token was live …
        gateway.forget_credentials()  # … and another thread of this process saves a revocation
        return token

    monkeypatch.setattr(gateway, "verify_api_token", revoked_meanwhile)
    assert call(key).status_code == 200
    assert gateway._passes == {}
    monkeypatch.setattr(gateway, "verify_api_token", real)
    assert call(key).status_code == 200
    assert len(gateway._passes) == 1


def test_a_token_is_not_remembered_past_its_expiry(serving: Any, ada: Any, fake_clock: FakeClock) -> None:
    token, key = account_services.create_api_token(ada, name="short", expires_at=timezone.now() + timedelta(hours=1))
    type(token).objects.filter(pk=token.pk).update(expires_at=timezone.now() + timedelta(seconds=1))
    assert call(key).status_code == 200
    (until,) = gateway._passes.values()
    assert until <= fake_clock.now + 1.0


def test_refusals_are_not_remembered_and_a_pass_is_per_deployment(
    serving: Any, ada: Any, vic: Any, servers: dict[int, ModelServer], fake_clock: FakeClock
) -> None:
    other = services.create_deployment(ada, serving.project, name="other-api", model="digits")
    add_revision(other, 1, RevisionStatus.SERVING, traffic=100, endpoint=servers[1].endpoint)
    _, key = services.create_serving_key(ada, other, "theirs")
    vics = token_of(vic)  # (saving a token makes the process forget whom it let through)
    assert call(key, path="/serve/demo/demo/other-api/invocations").status_code == 200
    assert call(key).status_code == 401  # remembered for other-api only
    assert call(vics).status_code == 403
    assert call(vics).status_code == 403
    assert len(gateway._passes) == 1


def test_it_accepts_a_serving_key_and_refuses_it_once_revoked(serving: Any, ada: Any) -> None:
    row, key = services.create_serving_key(ada, serving, "batch job")
    assert call(key).status_code == 200
    services.revoke_serving_key(ada, row)
    response = call(key)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_serving_key_opens_only_its_own_deployment(serving: Any, ada: Any, servers: dict[int, ModelServer]) -> None:
    other = services.create_deployment(ada, serving.project, name="other-api", model="digits")
    add_revision(other, 1, RevisionStatus.SERVING, traffic=100, endpoint=servers[1].endpoint)
    _, key = services.create_serving_key(ada, other, "theirs")
    assert call(key, path="/serve/demo/demo/other-api/invocations").status_code == 200
    assert call(key).status_code == 401


def test_an_unknown_deployment_is_404(serving: Any, ada: Any) -> None:
    response = call(token_of(ada), path="/serve/demo/demo/nothing-here/invocations")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such deployment."}


def test_another_teams_deployment_is_404(serving: Any, omar: Any) -> None:
    assert call(token_of(omar)).status_code == 404


def test_a_viewer_may_not_call_the_model(serving: Any, vic: Any) -> None:
    assert call(token_of(vic)).status_code == 403


def test_a_platform_admin_may_call_it(serving: Any, root: Any) -> None:
    assert call(token_of(root)).status_code == 200


def test_it_takes_only_post(serving: Any, ada: Any) -> None:
    response = Client().get("/serve/demo/demo/digits-api/invocations", HTTP_AUTHORIZATION=f"Bearer {token_of(ada)}")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_a_body_over_the_limit_is_413(serving: Any, ada: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "MAX_BODY_BYTES", 100)
    response = call(token_of(ada), frame(50))
    assert response.status_code == 413
    assert call(token_of(ada), frame(1)).status_code == 200


# --- what passes through ---------------------------------------------------------------------
def test_malformed_json_is_a_400_with_the_model_servers_message(serving: Any, ada: Any) -> None:
    response = call(token_of(ada), b"{not json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("Invalid input")
    assert response["X-Plinth-Model-Version"] == "1"


def test_wrong_columns_are_a_400_naming_the_missing_inputs(serving: Any, ada: Any) -> None:
    response = call(token_of(ada), {"dataframe_split": {"columns": ["x"], "data": [[1]]}})
    assert response.status_code == 400
    assert "missing inputs" in response.json()["message"]


def test_the_body_and_content_type_reach_the_model_server_but_not_the_token(
    serving: Any, ada: Any, servers: dict[int, ModelServer]
) -> None:
    key = token_of(ada)
    call(key, frame(4))
    seen = servers[1].seen[-1]
    assert seen["path"] == "/invocations"
    assert json.loads(seen["body"]) == frame(4)
    assert seen["headers"]["Content-Type"] == "application/json"
    assert key not in json.dumps(seen["headers"])


def test_a_model_that_raises_is_a_502_with_its_message(serving: Any, ada: Any, servers: dict[int, ModelServer]) -> None:
    servers[1].fail = True
    response = call(token_of(ada))
    assert response.status_code == 502
    assert response["X-Plinth-Upstream-Status"] == "500"
    assert "ZeroDivisionError" in response.json()["message"]


def test_a_model_server_that_is_gone_is_a_503_counted_as_5xx(deployment: Any, ada: Any) -> None:
    dead = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100, endpoint=f"http://127.0.0.1:{_free_port()}")
    response = call(token_of(ada))
    assert response.status_code == 503
    assert "does not answer" in response.json()["detail"]
    stats.flush()
    counted = stats.metrics([dead], timezone.now() - timedelta(minutes=1))[dead.pk]
    assert (counted.requests, counted.errors_5xx) == (1, 1)


def test_a_request_out_of_time_is_a_503(serving: Any, ada: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.core.deadline import BudgetSpent
    from apps.deployments.serving import local

    def spent(timeout: Any) -> Any:
        raise BudgetSpent("this request's time for outbound calls is spent")

    monkeypatch.setattr(local, "cap_timeout", spent)
    response = call(token_of(ada))
    assert response.status_code == 503
    assert "no time left" in response.json()["detail"]


def test_nothing_serving_is_a_503(
    deployment: Any, ada: Any, servers: dict[int, ModelServer], caplog: pytest.LogCaptureFixture
) -> None:
    add_revision(deployment, 1, RevisionStatus.READY, traffic=0, endpoint=servers[1].endpoint)
    with caplog.at_level(logging.INFO):
        response = call(token_of(ada))
    assert response.status_code == 503
    assert response.json()["detail"].startswith("No revision serves yet")
    # Expected while a model starts: one INFO line of the gateway's, no ERROR from django.request.
    assert [r.levelname for r in caplog.records if r.name == "django.request"] == []
    assert [r.levelname for r in caplog.records if r.name == "apps.deployments.gateway"] == ["INFO"]


def test_a_restarted_server_on_a_new_port_gets_the_request_after_one_retry(
    serving: Any, ada: Any, servers: dict[int, ModelServer]
) -> None:
    key = token_of(ada)
    assert call(key).status_code == 200  # the route (old endpoint) is now cached
    revision = serving.revisions.get()
    servers[1].close()
    moved = ModelServer(1)
    try:
        type(revision).objects.filter(pk=revision.pk).update(endpoint=moved.endpoint)
        response = call(key)
        assert response.status_code == 200
        assert len(moved.seen) == 1
    finally:
        moved.close()
        servers[1] = ModelServer(1)  # the fixture closes what it holds


# --- the split ---------------------------------------------------------------------------------
def test_a_ten_percent_canary_gets_twenty_of_two_hundred_requests(
    deployment: Any, ada: Any, servers: dict[int, ModelServer]
) -> None:
    add_revision(deployment, 1, RevisionStatus.SERVING, traffic=90, endpoint=servers[1].endpoint)
    add_revision(deployment, 2, RevisionStatus.SERVING, traffic=10, endpoint=servers[2].endpoint, is_canary=True)
    key = token_of(ada)
    versions: Counter[str] = Counter()
    for _ in range(200):
        response = call(key, frame(1))
        assert response.status_code == 200
        assert response.json() == {"predictions": [int(response["X-Plinth-Model-Version"])]}
        versions[response["X-Plinth-Model-Version"]] += 1
    assert abs(versions["2"] - 20) <= 2, versions
    assert versions["1"] + versions["2"] == 200
    assert len(servers[2].seen) == versions["2"]


def test_a_revision_at_zero_percent_gets_nothing(deployment: Any, ada: Any, servers: dict[int, ModelServer]) -> None:
    add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100, endpoint=servers[1].endpoint)
    add_revision(deployment, 2, RevisionStatus.READY, traffic=0, endpoint=servers[2].endpoint)
    key = token_of(ada)
    assert {call(key)["X-Plinth-Model-Version"] for _ in range(20)} == {"1"}
    assert servers[2].seen == []


def test_the_balancer_spreads_picks_evenly() -> None:
    class Rev:
        def __init__(self, pk: int, traffic: int) -> None:
            self.pk, self.traffic = pk, traffic

    balancer = gateway.WeightedRoundRobin()
    revisions = [Rev(1, 75), Rev(2, 25)]
    chosen = [balancer.pick(7, revisions).pk for _ in range(100)]  # type: ignore[arg-type,union-attr]
    assert chosen.count(2) == 25
    assert all(chosen[i : i + 4].count(2) == 1 for i in range(0, 100, 4))  # one in every four


# --- what gets counted -------------------------------------------------------------------------
def test_requests_and_errors_are_counted_per_revision(
    deployment: Any, ada: Any, servers: dict[int, ModelServer]
) -> None:
    stable = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=50, endpoint=servers[1].endpoint)
    canary = add_revision(deployment, 2, RevisionStatus.SERVING, traffic=50, endpoint=servers[2].endpoint)
    servers[2].fail = True
    key = token_of(ada)
    for _ in range(10):
        call(key)
    call(key, b"{bad")  # the 11th: to the stable one (alternating), a 4xx
    stats.flush()
    counted = stats.metrics([stable, canary], timezone.now() - timedelta(minutes=1))
    assert (counted[stable.pk].requests, counted[stable.pk].errors_4xx, counted[stable.pk].errors_5xx) == (6, 1, 0)
    assert (counted[canary.pk].requests, counted[canary.pk].errors_5xx) == (5, 5)
    assert counted[canary.pk].error_rate == 1.0
    assert counted[stable.pk].p50_ms is not None
    assert RequestStats.objects.filter(revision=stable, writer=stats.writer_name()).count() == 1


def test_percentiles_interpolate_within_the_histogram_buckets(deployment: Any) -> None:
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    # 60 requests at 7 ms (bucket 5-10), 30 at 40 ms (25-50), 10 at 300 ms (250-500).
    for latency, times in ((7.0, 60), (40.0, 30), (300.0, 10)):
        for _ in range(times):
            stats.record(revision.pk, 200, latency)
    stats.flush()
    got = stats.metrics([revision], timezone.now() - timedelta(minutes=1))[revision.pk]
    assert got.requests == 100
    # p50: rank 50 of the 60 in 5-10 ms → 5 + 5 * 50/60; p95: rank 95, the 5th of the 10
    # in 250-500 ms → 250 + 250 * 5/10; p99: the 9th of them → 250 + 250 * 9/10.
    assert got.p50_ms == pytest.approx(5 + 5 * 50 / 60)
    assert got.p95_ms == pytest.approx(375.0)
    assert got.p99_ms == pytest.approx(475.0)


def test_a_percentile_beyond_the_last_bucket_reads_as_its_bound() -> None:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[-1] = 3
    assert stats.percentile(counts, 0.5) == float(LATENCY_BUCKETS_MS[-1])
    assert stats.percentile([0] * (len(LATENCY_BUCKETS_MS) + 1), 0.5) is None


def test_flushing_twice_rewrites_the_processs_row_instead_of_adding(deployment: Any) -> None:
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    stats.record(revision.pk, 200, 3.0)
    stats.flush()
    stats.record(revision.pk, 503, 12.0)
    stats.flush()
    rows = RequestStats.objects.filter(revision=revision)
    assert [(r.requests, r.errors_5xx) for r in rows] == [(2, 1)]
    assert sum(rows[0].latency_buckets) == 2


def test_a_process_writes_at_most_once_a_second(deployment: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    clock = [1000.0]
    monkeypatch.setattr(stats, "clock", lambda: clock[0])
    stats.record(revision.pk, 200, 3.0)
    stats.flush_if_due()
    assert RequestStats.objects.get(revision=revision).requests == 1
    stats.record(revision.pk, 200, 3.0)
    clock[0] += 0.5
    stats.flush_if_due()
    assert RequestStats.objects.get(revision=revision).requests == 1  # not yet
    clock[0] += 0.6
    stats.flush_if_due()
    assert RequestStats.objects.get(revision=revision).requests == 2


def test_other_writers_rows_are_added_up(deployment: Any) -> None:
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    minute = stats.minute_of(timezone.now())
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[1] = 4
    RequestStats.objects.create(
        revision=revision, minute=minute, writer="elsewhere:1", requests=4, errors_5xx=1, latency_buckets=buckets
    )
    stats.record(revision.pk, 200, 8.0)
    stats.flush()
    got = stats.metrics([revision], minute)[revision.pk]
    assert (got.requests, got.errors_5xx) == (5, 1)


def test_the_series_has_a_point_per_minute(deployment: Any) -> None:
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    now = timezone.now()
    stats.record(revision.pk, 200, 8.0, now=now - timedelta(minutes=2))
    stats.record(revision.pk, 500, 30.0, now=now)
    stats.flush()
    got = stats.series([revision], now - timedelta(minutes=4))[revision.pk]
    assert len(got.t) == 5
    assert got.requests == [0, 0, 1, 0, 1]
    assert got.errors == [0, 0, 0, 0, 1]
    assert got.p50_ms[0] is None and got.p50_ms[2] == pytest.approx(5 + 5 * 0.5 / 1)


def test_samples_are_kept_only_when_asked_and_without_credentials(
    serving: Any, ada: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = token_of(ada)
    call(key)
    stats.flush()
    assert not RequestSample.objects.exists()
    type(serving).objects.filter(pk=serving.pk).update(capture_samples=True)
    gateway.clear_routes()
    monkeypatch.setattr(stats, "SAMPLE_BODY_BYTES", 40)
    for _ in range(stats.SAMPLES_PER_MINUTE + 3):
        call(key, frame(5))
    stats.flush()
    samples = list(RequestSample.objects.all())
    # At most SAMPLES_PER_MINUTE per minute: 10 when the calls fall in one minute, up to 13
    # when they cross into the next.
    per_minute: dict[Any, int] = {}
    for sample in samples:
        minute = sample.at.replace(second=0, microsecond=0)
        per_minute[minute] = per_minute.get(minute, 0) + 1
    assert max(per_minute.values()) <= stats.SAMPLES_PER_MINUTE
    assert max(per_minute.values()) == stats.SAMPLES_PER_MINUTE or len(per_minute) == 2
    assert stats.SAMPLES_PER_MINUTE <= len(samples) <= stats.SAMPLES_PER_MINUTE + 3
    if len(per_minute) == 1:
        assert len(samples) == stats.SAMPLES_PER_MINUTE
    assert all(s.status_code == 200 and s.request_body.endswith("…") for s in samples)
    assert len(samples[0].request_body) == 41
    assert samples[0].response_body.startswith('{"predictions"')
    assert not any(key in s.request_body + s.response_body for s in samples)


# --- the lean WSGI path -------------------------------------------------------------------
def wsgi_call(
    method: str, path: str, body: bytes = b"", *, application: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request through the WSGI application gunicorn serves (not the test client's
    handler), or through `application`: (status, headers, body). Database connections stay
    open across it, as the test client keeps them, so the test's transaction survives
    (not for use from several threads at once: see raw_wsgi_call)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        return raw_wsgi_call(method, path, body, application=application, **headers)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def raw_wsgi_call(
    method: str, path: str, body: bytes = b"", *, application: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """wsgi_call with Django's signals left as they are (safe from several threads)."""
    if application is None:
        from portal.wsgi import application
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        **{"HTTP_" + name.upper(): value for name, value in headers.items()},
    }
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.append((status, response_headers))

    result = application(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, response_headers = started[0]
    return int(status.split()[0]), {name.lower(): value for name, value in response_headers}, content


def test_the_wsgi_application_answers_the_gateway_without_the_pages_middleware(serving: Any, ada: Any) -> None:
    status, headers, content = wsgi_call(
        "POST",
        "/serve/demo/demo/digits-api/invocations",
        json.dumps(frame(2)).encode(),
        authorization=f"Bearer {token_of(ada)}",
    )
    assert status == 200, content
    assert json.loads(content) == {"predictions": [1, 1]}
    assert headers["x-plinth-revision"] == "1"
    assert headers["x-request-id"]  # the gateway's middleware still runs
    assert headers["x-content-type-options"] == "nosniff"
    # … and the pages' middleware does not: no session, CSRF cookie, CSP or Vary: Cookie.
    assert "set-cookie" not in headers
    assert "content-security-policy" not in headers
    assert "cookie" not in headers.get("vary", "").lower()


def test_the_lean_path_checks_credentials_on_every_request(serving: Any, ada: Any) -> None:
    row, key = services.create_serving_key(ada, serving, "batch job")
    path = "/serve/demo/demo/digits-api/invocations"
    body = json.dumps(frame()).encode()
    assert wsgi_call("POST", path, body, authorization=f"Bearer {key}")[0] == 200
    services.revoke_serving_key(ada, row)
    status, _, content = wsgi_call("POST", path, body, authorization=f"Bearer {key}")
    assert status == 401
    assert "revoked" in json.loads(content)["detail"]
    assert wsgi_call("POST", path, body)[0] == 401
    assert wsgi_call("GET", path, authorization=f"Bearer {token_of(ada)}")[0] == 405


def test_other_paths_keep_the_full_middleware(settings: Any) -> None:
    from django.urls import reverse

    status, headers, _ = wsgi_call("GET", reverse("login"))
    assert status == 200
    assert "content-security-policy" in headers  # CSP middleware
    assert "csrftoken" in headers.get("set-cookie", "")  # CSRF on the sign-in form
    from portal import wsgi

    names = [type(m).__name__ for m in _chain(wsgi.gateway_application)]
    assert "SessionMiddleware" not in names and "CsrfViewMiddleware" not in names
    assert "RequestIdMiddleware" in names
    assert "SessionMiddleware" in [type(m).__name__ for m in _chain(wsgi.portal_application)]
    assert settings.MIDDLEWARE[0] == "apps.core.middleware.RequestIdMiddleware"
    assert "django.contrib.sessions.middleware.SessionMiddleware" in settings.MIDDLEWARE


_settings_seen_while_building: list[list[str]] = []


class SettingsProbeMiddleware:
    """Notes settings.MIDDLEWARE as it is while a handler builds its chain."""

    def __init__(self, get_response: Any) -> None:
        from django.conf import settings

        self.get_response = get_response
        _settings_seen_while_building.append(list(settings.MIDDLEWARE))

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)


def test_building_the_gateway_handler_leaves_the_settings_alone(settings: Any) -> None:
    from portal.wsgi import GatewayHandler

    full = list(settings.MIDDLEWARE)
    _settings_seen_while_building.clear()
    handler = GatewayHandler([f"{__name__}.SettingsProbeMiddleware", *settings.GATEWAY_MIDDLEWARE])
    assert _settings_seen_while_building == [full]  # the portal's list, even mid-build
    assert [type(m).__name__ for m in _chain(handler)] == [
        "SettingsProbeMiddleware",
        "RequestIdMiddleware",
        "RequestBudgetMiddleware",
        "SecurityMiddleware",
    ]
    assert full == settings.MIDDLEWARE


def test_both_handlers_built_and_used_from_many_threads_keep_their_own_chains(settings: Any) -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from django.urls import reverse

    from portal.wsgi import GatewayHandler, dispatcher

    login = reverse("login")
    gateway_path = "/serve/demo/demo/digits-api/invocations"
    failures: list[str] = []
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        application = dispatcher(WSGIHandler(), GatewayHandler())  # built while the others serve
        for _ in range(10):
            status, headers, _ = raw_wsgi_call("POST", gateway_path, b"{}", application=application)
            if (status, "set-cookie" in headers, "content-security-policy" in headers) != (401, False, False):
                failures.append(f"gateway: {status} {headers}")
            status, headers, _ = raw_wsgi_call("GET", login, application=application)
            if (
                status != 200
                or "content-security-policy" not in headers
                or "csrftoken" not in headers.get("set-cookie", "")
            ):
                failures.append(f"page: {status} {headers}")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def _chain(handler: Any) -> list[Any]:
    """The middleware instances of a Django handler, outermost first."""
    found = []
    current = handler._middleware_chain
    while current is not None:
        instance = getattr(current, "__wrapped__", current)
        if hasattr(instance, "get_response"):
            found.append(instance)
            current = instance.get_response
        else:
            current = None
    return found

"""Contract tests of the MLflow doubles: every test runs once against the double (as the unit
tests configure it) and once against the real `mlflow server`, through the gateway calls the
app makes (apps.tracking.gateway, apps.registry.mlflow, the launch's run writes). What passes
on both sides is what the unit tests may rely on; a double that answers otherwise fails here,
not silently in the unit tests that trust it.

Covered: the wire shapes (MLflow leaves empty lists out; NaN is the string "NaN" on the REST
paths and a float on the bulk path; ±inf comes back as MLflow's ±1.797e308), the latest value
MLflow keeps per metric (highest step, then newest timestamp), run ordering (newest first,
ties by run id), page tokens, the filters the portal sends, deleted runs and experiments,
artifacts, aliases, tags, and the errors the app maps (404 RESOURCE_DOES_NOT_EXIST, 400
INVALID_PARAMETER_VALUE, MlflowUnavailable)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest

from apps.core.numbers import MLFLOW_FLOAT_MAX, normalise
from apps.tracking.gateway import MlflowError, MlflowUnavailable
from apps.tracking.runs import DEFAULT_ORDER
from tests.contracts.conftest import (
    FakeLaunches,
    FakeRegistryWorld,
    FakeTracking,
    RealLaunches,
    RealRegistryWorld,
    RealTracking,
)

Tracking = FakeTracking | RealTracking
Registry = FakeRegistryWorld | RealRegistryWorld
Launches = FakeLaunches | RealLaunches

T0 = 1_700_000_000_000
MISSING_RUN = "0" * 32


def offset_of(token: str) -> Any:
    """What a page token says: MLflow's are base64 of {"offset": N}, and the portal checks
    tokens for that shape before it passes one on (apps.tracking)."""
    return json.loads(base64.b64decode(token))


def refused(exc: pytest.ExceptionInfo[MlflowError], status: int, code: str) -> None:
    assert (exc.value.http_status, exc.value.error_code) == (status, code), exc.value.message


def by_key(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


def latest(run: dict[str, Any]) -> dict[str, tuple[Any, int, int]]:
    return {m["key"]: (m["value"], m["step"], m["timestamp"]) for m in run["data"].get("metrics", [])}


# -- tracking ------------------------------------------------------------------------------------
def test_a_run_reads_back_with_mlflows_shape_and_latest_values(tracking: Tracking) -> None:
    experiment = tracking.experiment()
    run_id = tracking.run(
        experiment,
        name="résumé/1",
        start_time=T0,
        metrics={
            # an earlier step written after the last one: the latest stays at step 4
            "loss": [(0, T0, 1.0), (1, T0 + 1, 0.8), (4, T0 + 4, 0.5), (2, T0 + 9, 9.0)],
            # logged without a step (MLflow's step 0): the newest timestamp wins
            "epoch_loss": [(0, T0 + 5, 1.0), (0, T0 + 3, 2.0)],
            "accuracy": [(0, T0, 0.93)],
        },
        params={"lr": "0.01", "layers/deep": "3"},
        tags={"team": "demo", "plinth.launch": "7"},
    )
    run = tracking.gateway.get_run(run_id)
    info = run["info"]
    assert (info["run_id"], info["run_uuid"], info["experiment_id"]) == (run_id, run_id, experiment)
    assert (info["run_name"], info["status"], info["lifecycle_stage"]) == ("résumé/1", "FINISHED", "active")
    assert (info["start_time"], info["end_time"]) == (T0, T0 + 60_000)
    assert info["artifact_uri"].endswith(f"/{run_id}/artifacts")
    assert latest(run) == {"loss": (0.5, 4, T0 + 4), "epoch_loss": (1.0, 0, T0 + 5), "accuracy": (0.93, 0, T0)}
    assert by_key(run["data"]["params"]) == {"lr": "0.01", "layers/deep": "3"}
    assert by_key(run["data"]["tags"]) == {"team": "demo", "plinth.launch": "7", "mlflow.runName": "résumé/1"}


def test_empty_lists_are_left_out_as_mlflow_does(tracking: Tracking) -> None:
    run_id = tracking.run(tracking.experiment(), name="bare")
    data = tracking.gateway.get_run(run_id)["data"]
    assert "metrics" not in data and "params" not in data
    assert by_key(data["tags"]) == {"mlflow.runName": "bare"}


def test_non_finite_values_come_back_as_mlflow_stores_them(tracking: Tracking) -> None:
    values = [1.0, math.nan, math.inf, -math.inf, 0.5]
    run_id = tracking.run(
        tracking.experiment(),
        metrics={
            "loss": [(step, T0 + step, value) for step, value in enumerate(values)],
            "last_nan": [(0, T0, math.nan)],
            "last_inf": [(0, T0, math.inf)],
        },
    )
    gw = tracking.gateway
    # runs/get and metrics/get-history: NaN as the string "NaN", ±inf as ±1.797e308
    found = {k: v[0] for k, v in latest(gw.get_run(run_id)).items()}
    assert found == {"loss": 0.5, "last_nan": "NaN", "last_inf": MLFLOW_FLOAT_MAX}
    history, token = gw.get_metric_history(run_id, "loss")
    assert [p["value"] for p in history] == [1.0, "NaN", MLFLOW_FLOAT_MAX, -MLFLOW_FLOAT_MAX, 0.5]
    assert token == ""
    # the bulk (ajax) endpoint: NaN as a float
    bulk = [p["value"] for p in gw.get_history_bulk([run_id], "loss")]
    assert bulk[0] == 1.0 and math.isnan(bulk[1]) and bulk[2:] == [MLFLOW_FLOAT_MAX, -MLFLOW_FLOAT_MAX, 0.5]
    # what the app reads from either: NaN and ±inf
    read = [normalise(v) for v in bulk]
    assert math.isnan(read[1]) and read[2:4] == [math.inf, -math.inf]


def test_an_unknown_run_is_mlflows_404(tracking: Tracking) -> None:
    gw = tracking.gateway
    for call in (
        lambda: gw.get_run(MISSING_RUN),
        lambda: gw.list_artifacts(MISSING_RUN),
        lambda: gw.open_artifact(MISSING_RUN, "model/MLmodel"),
    ):
        with pytest.raises(MlflowError) as exc:
            call()
        refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")
    # histories of an unknown run are empty, not refused
    assert gw.get_history_bulk([MISSING_RUN], "loss") == []
    assert gw.get_metric_history(MISSING_RUN, "loss") == ([], "")


def test_runs_come_newest_first_ties_by_run_id_and_page_with_tokens(tracking: Tracking) -> None:
    experiment = tracking.experiment()
    starts = [T0, T0 + 3000, T0 + 3000, T0 + 2000, T0 + 3000]
    ids = {tracking.run(experiment, name=f"r{i}", start_time=start): start for i, start in enumerate(starts)}
    expected = sorted(ids, key=lambda run_id: (-ids[run_id], run_id))
    gw = tracking.gateway

    def names(runs: list[dict[str, Any]]) -> list[str]:
        return [r["info"]["run_id"] for r in runs]

    everything, token = gw.search_runs([experiment])
    assert (names(everything), token) == (expected, "")
    assert names(gw.search_runs([experiment], order_by=[DEFAULT_ORDER])[0]) == expected
    pages: list[list[str]] = []
    tokens: list[str] = []
    token = ""
    while True:
        page, token = gw.search_runs([experiment], max_results=2, page_token=token)
        pages.append(names(page))
        tokens.append(token)
        if not token:
            break
    assert pages == [expected[0:2], expected[2:4], expected[4:]]
    assert [offset_of(t) for t in tokens[:2]] == [{"offset": 2}, {"offset": 4}] and tokens[2] == ""
    # a page that ends exactly at the last run has no next token
    assert gw.search_runs([experiment], max_results=5)[1] == ""
    assert gw.search_runs(["987654321"]) == ([], "")  # an experiment MLflow does not have


def test_the_filters_the_portal_sends(tracking: Tracking) -> None:
    experiment = tracking.experiment()
    a = tracking.run(experiment, start_time=T0 + 2, tags={"plinth.sweep": "7"})
    b = tracking.run(experiment, start_time=T0 + 1, tags={"plinth.sweep": "8"})
    c = tracking.run(experiment, start_time=T0, tags={"plinth.sweep": "7"})
    gw = tracking.gateway

    def ids(filter_string: str) -> list[str]:
        return [r["info"]["run_id"] for r in gw.search_runs([experiment], filter_string)[0]]

    assert ids(f"attributes.run_id IN ('{a}','{c}')") == [a, c]  # apps.tracking.lookups / tasks
    assert ids(f"attributes.run_id IN ('{b}', '{MISSING_RUN}')") == [b]
    assert ids("tags.plinth.sweep = '7'") == [a, c]  # apps.launches.charts
    assert ids("tags.plinth.sweep = '9'") == []
    with pytest.raises(MlflowError) as exc:
        gw.search_runs([experiment], "metrics.loss <<< 1")
    refused(exc, 400, "INVALID_PARAMETER_VALUE")


def test_deleted_runs_by_view_type(tracking: Tracking) -> None:
    experiment = tracking.experiment()
    alive = tracking.run(experiment, start_time=T0 + 1)
    gone = tracking.run(experiment, start_time=T0, deleted=True)
    gw = tracking.gateway

    def seen(view: str) -> list[tuple[str, str]]:
        runs = gw.search_runs([experiment], run_view_type=view)[0]
        return [(r["info"]["run_id"], r["info"]["lifecycle_stage"]) for r in runs]

    assert seen("ACTIVE_ONLY") == [(alive, "active")]
    assert seen("DELETED_ONLY") == [(gone, "deleted")]
    assert seen("ALL") == [(alive, "active"), (gone, "deleted")]
    assert gw.get_run(gone)["info"]["lifecycle_stage"] == "deleted"  # still readable


def test_metric_history_is_ordered_by_time_and_pages_with_tokens(tracking: Tracking) -> None:
    points = [(3, T0 + 30, 0.3), (0, T0, 1.0), (2, T0 + 20, 0.6), (1, T0 + 10, 0.8), (5, T0 + 5, 7.0)]
    run_id = tracking.run(tracking.experiment(), metrics={"loss": points})
    gw = tracking.gateway
    full, token = gw.get_metric_history(run_id, "loss")
    assert token == ""
    assert [(p["step"], p["timestamp"], p["value"]) for p in full] == sorted(points, key=lambda p: (p[1], p[0]))
    assert {p["key"] for p in full} == {"loss"}
    paged: list[dict[str, Any]] = []
    tokens: list[str] = []
    token = ""
    while True:
        page, token = gw.get_metric_history(run_id, "loss", max_results=2, page_token=token)
        paged.extend(page)
        tokens.append(token)
        if not token:
            break
    assert paged == full and tokens[2] == ""
    assert [offset_of(t) for t in tokens[:2]] == [{"offset": 2}, {"offset": 4}]
    assert gw.get_metric_history(run_id, "never_logged") == ([], "")


def test_history_bulk_orders_by_run_then_time_and_stops_at_max_results(tracking: Tracking) -> None:
    experiment = tracking.experiment()
    one = tracking.run(experiment, metrics={"loss": [(1, T0 + 10, 0.5), (0, T0, 1.0), (2, T0 + 10, 0.4)]})
    two = tracking.run(experiment, metrics={"loss": [(0, T0, 2.0)], "acc": [(0, T0, 0.1)]})
    bare = tracking.run(experiment)
    gw = tracking.gateway
    points = gw.get_history_bulk([two, bare, one], "loss")
    expected = sorted(
        [(one, 1, T0 + 10, 0.5), (one, 0, T0, 1.0), (one, 2, T0 + 10, 0.4), (two, 0, T0, 2.0)],
        key=lambda p: (p[0], p[2], p[1]),
    )
    assert [(p["run_id"], p["step"], p["timestamp"], p["value"]) for p in points] == expected
    assert {p["key"] for p in points} == {"loss"}
    assert [p["value"] for p in gw.get_history_bulk([one, two], "loss", max_results=2)] == [e[3] for e in expected[:2]]


def test_artifacts_list_and_download(tracking: Tracking) -> None:
    run_id = tracking.run(
        tracking.experiment(), artifacts={"a.txt": b"hello", "model/MLmodel": b"flavors: {}\n", "model/x.pkl": b"1"}
    )
    gw = tracking.gateway
    assert gw.list_artifacts(run_id) == [
        {"path": "a.txt", "is_dir": False, "file_size": 5},
        {"path": "model", "is_dir": True},
    ]
    assert gw.list_artifacts(run_id, "model") == [
        {"path": "model/MLmodel", "is_dir": False, "file_size": 12},
        {"path": "model/x.pkl", "is_dir": False, "file_size": 1},
    ]
    assert gw.list_artifacts(run_id, "nothing-here") == []
    response = gw.open_artifact(run_id, "model/MLmodel")
    try:
        assert b"".join(response.iter_content(4)) == b"flavors: {}\n"
        assert response.headers["Content-Length"] == "12"
    finally:
        response.close()
    for path in ("missing.txt", "model"):  # a folder is not a file
        with pytest.raises(MlflowError) as exc:
            gw.open_artifact(run_id, path)
        refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")


# -- registry ------------------------------------------------------------------------------------
def names_of(models: list[dict[str, Any]], among: set[str]) -> list[str]:
    return [m["name"] for m in models if m["name"] in among]


def test_project_and_plinth_models(registry: Registry) -> None:
    project = registry.project
    zeta = registry.model(project, [{"accuracy": 0.9}, {"accuracy": 0.95}], prefix="zeta")
    alpha = registry.model(project, [{"accuracy": 0.8}], prefix="alpha")
    untagged = registry.model(None, [{"accuracy": 0.7}], prefix="other")
    elsewhere = registry.model(f"{project}x", [], prefix="else")
    gw = registry.gateway
    mine = gw.project_models(project)
    assert [m["name"] for m in mine] == [alpha, zeta]  # by name
    by_name = {m["name"]: m for m in mine}
    assert by_key(by_name[zeta]["tags"]) == {"plinth.project": project}
    assert "aliases" not in by_name[zeta]  # no alias set: MLflow leaves the list out
    latest = by_name[zeta]["latest_versions"]
    assert [(v["version"], v["status"], v["current_stage"]) for v in latest] == [("2", "READY", "None")]
    assert names_of(gw.plinth_models(), {zeta, alpha, untagged, elsewhere}) == sorted([alpha, zeta, elsewhere])
    assert "latest_versions" not in gw.get_registered_model(elsewhere)  # type: ignore[operator]


def test_registered_model_reads_and_tags(registry: Registry) -> None:
    gw = registry.gateway
    name = registry.model(registry.project, [{"accuracy": 0.9}])
    assert gw.get_registered_model(f"{name}-missing") is None
    gw.set_registered_model_tag(name, "plinth.note", "ok")
    model = gw.get_registered_model(name)
    assert model is not None and by_key(model["tags"]) == {"plinth.project": registry.project, "plinth.note": "ok"}
    with pytest.raises(MlflowError) as exc:
        gw.set_registered_model_tag(f"{name}-missing", "k", "v")
    refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")


def test_versions_newest_first_by_model_and_their_tags(registry: Registry) -> None:
    gw = registry.gateway
    b = registry.model(registry.project, [{"accuracy": 0.1}, {"accuracy": 0.2}], prefix="b")
    a = registry.model(registry.project, [{"accuracy": 0.3}, {"accuracy": 0.4}], prefix="a")
    versions = gw.model_versions([b, a, f"{a}-missing", a])
    assert [(v["name"], v["version"]) for v in versions] == [(a, "2"), (a, "1"), (b, "2"), (b, "1")]
    first = versions[1]
    assert first["source"] == f"runs:/{first['run_id']}/model" and first["status"] == "READY"
    assert "tags" not in first and "aliases" not in first
    assert gw.model_versions([]) == []
    found = gw.versions_of_runs([first["run_id"], MISSING_RUN])
    assert [(v["name"], v["version"]) for v in found] == [(a, "1")]
    assert gw.get_model_version(a, 2)["run_id"] == versions[0]["run_id"]  # type: ignore[index]
    assert gw.get_model_version(a, 9) is None and gw.get_model_version(f"{a}-missing", 1) is None
    gw.set_model_version_tag(a, 1, "plinth.promotion", "12")
    assert by_key(gw.get_model_version(a, "1")["tags"]) == {"plinth.promotion": "12"}  # type: ignore[index]
    with pytest.raises(MlflowError) as exc:
        gw.set_model_version_tag(a, 9, "k", "v")
    refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")


def test_aliases_set_get_delete(registry: Registry) -> None:
    gw = registry.gateway
    name = registry.model(registry.project, [{"accuracy": 0.9}, {"accuracy": 0.95}])
    missing = f"{name}-missing"
    assert gw.get_alias(name, "champion") is None
    gw.delete_alias(name, "champion")  # deleting an unset alias is fine
    with pytest.raises(MlflowError) as exc:
        gw.set_alias(name, "champion", 9)
    refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")
    gw.set_alias(name, "champion", 1)
    gw.set_alias(name, "champion", 2)
    gw.set_alias(name, "champion", 2)  # again: a no-op
    gw.set_alias(name, "backup", 1)
    assert gw.get_alias(name, "champion") == 2
    model = gw.get_registered_model(name)
    assert model is not None
    assert model["aliases"] == [{"alias": "backup", "version": "1"}, {"alias": "champion", "version": "2"}]
    assert gw.get_model_version(name, 1)["aliases"] == ["backup"]  # type: ignore[index]
    gw.delete_alias(name, "champion")
    assert gw.get_alias(name, "champion") is None and gw.get_alias(name, "backup") == 1
    # a model that does not exist: reading is "not set", writing is MLflow's 404
    assert gw.get_alias(missing, "champion") is None
    for call in (lambda: gw.set_alias(missing, "champion", 1), lambda: gw.delete_alias(missing, "champion")):
        with pytest.raises(MlflowError) as exc:
            call()
        refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")


def test_run_summaries_read_non_finite_metrics(registry: Registry) -> None:
    gw = registry.gateway
    name = registry.model(registry.project, [{"accuracy": 0.9}, {"accuracy": math.nan, "f1": math.inf, "l": -math.inf}])
    runs = {int(v["version"]): v["run_id"] for v in gw.model_versions([name])}
    found = gw.run_summaries([runs[1], runs[2], MISSING_RUN])
    assert set(found) == {runs[1], runs[2]}
    assert found[runs[1]]["metrics"] == {"accuracy": 0.9}
    assert found[runs[1]]["status"] == "FINISHED" and isinstance(found[runs[1]]["experiment_id"], str)
    second = found[runs[2]]["metrics"]
    assert math.isnan(second["accuracy"]) and (second["f1"], second["l"]) == (math.inf, -math.inf)


def test_a_registry_that_does_not_answer_is_unavailable(registry: Registry) -> None:
    name = registry.model(registry.project, [{"accuracy": 0.9}])
    gw = registry.down()
    for call in (
        lambda: gw.project_models(registry.project),
        lambda: gw.get_registered_model(name),
        lambda: gw.get_alias(name, "champion"),
        lambda: gw.set_alias(name, "champion", 1),
        lambda: gw.run_summaries([MISSING_RUN]),
    ):
        with pytest.raises(MlflowUnavailable):
            call()


# -- launches --------------------------------------------------------------------------------------
def test_the_runs_a_launch_writes(launches: Launches) -> None:
    gw = launches.gateway
    experiment = launches.experiment()
    run_id = gw.create_run(experiment, "digits-42", tags={"plinth.launch": "42"})
    assert launches.observe(run_id) == {
        "experiment_id": experiment,
        "name": "digits-42",
        "tags": {"plinth.launch": "42"},
        "status": "RUNNING",
    }
    gw.set_tag(run_id, "mlflow.parentRunId", "p" * 32)
    gw.end_run(run_id, "FAILED")
    observed = launches.observe(run_id)
    assert observed is not None and observed["status"] == "FAILED"
    assert observed["tags"] == {"plinth.launch": "42", "mlflow.parentRunId": "p" * 32}
    gw.delete_run(run_id)
    assert launches.observe(run_id) is None
    gw.delete_run(run_id)  # again: fine
    for call in (lambda: gw.set_tag(run_id, "k", "v"), lambda: gw.end_run(run_id, "KILLED")):
        with pytest.raises(MlflowError) as exc:
            call()
        refused(exc, 400, "INVALID_PARAMETER_VALUE")
        assert "must be in the 'active' state" in exc.value.message
    for call in (
        lambda: gw.set_tag(MISSING_RUN, "k", "v"),
        lambda: gw.end_run(MISSING_RUN, "KILLED"),
        lambda: gw.delete_run(MISSING_RUN),
    ):
        with pytest.raises(MlflowError) as exc:
            call()
        refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")


def test_an_ended_run_reopens_and_ends_again(launches: Launches) -> None:
    """A sweep extended after it ended: its parent run goes back to RUNNING, then ends again."""
    gw = launches.gateway
    run_id = gw.create_run(launches.experiment(), "sweep of digits")
    gw.end_run(run_id, "FINISHED")
    gw.reopen_run(run_id)
    observed = launches.observe(run_id)
    assert observed is not None and observed["status"] == "RUNNING"
    gw.end_run(run_id, "KILLED")
    observed = launches.observe(run_id)
    assert observed is not None and observed["status"] == "KILLED"
    gw.delete_run(run_id)
    with pytest.raises(MlflowError) as exc:
        gw.reopen_run(run_id)
    refused(exc, 400, "INVALID_PARAMETER_VALUE")
    with pytest.raises(MlflowError) as exc:
        gw.reopen_run(MISSING_RUN)
    refused(exc, 404, "RESOURCE_DOES_NOT_EXIST")


def test_a_deleted_experiment_refuses_new_runs(launches: Launches) -> None:
    experiment = launches.experiment()
    launches.delete_experiment(experiment)
    with pytest.raises(MlflowError) as exc:
        launches.gateway.create_run(experiment, "digits-43")
    refused(exc, 400, "INVALID_PARAMETER_VALUE")
    assert "must be in the 'active' state" in exc.value.message


@pytest.mark.parametrize("direction", ["DESC", "ASC"])
def test_ordered_by_a_metric_finite_values_come_first_in_pages(
    tracking: Tracking, direction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own order puts the ±1.797e308 it stores for ±inf first (+inf in a DESC sort,
    -inf in an ASC one); the portal's phased search (apps.tracking.runs) lists finite values
    first, then +inf, -inf, NaN and never logged, across pages, on the double and the server."""
    from apps.tracking import runs as runs_module

    experiment = tracking.experiment()
    values = {"low": 0.5, "high": 2.0, "plus": math.inf, "minus": -math.inf, "nan": math.nan, "none": None}
    for index, (name, value) in enumerate(values.items()):
        metrics = {"loss": [(0, T0 + index, value)]} if value is not None else {"other": [(0, T0, 1.0)]}
        tracking.run(experiment, name=name, start_time=T0 + index, metrics=metrics)
    order = [f"metrics.loss {direction}"]

    def names(raw: list[dict[str, Any]]) -> list[str]:
        return [run["info"]["run_name"] for run in raw]

    natural, _ = tracking.gateway.search_runs([experiment], "", order_by=order)
    assert names(natural)[0] == ("plus" if direction == "DESC" else "minus")  # what the phases fix
    assert names(natural)[-2:] == ["nan", "none"]

    monkeypatch.setattr(runs_module, "gateway", lambda: tracking.gateway)
    phases = runs_module.metric_order_phases("", order)
    assert phases is not None
    seen: list[str] = []
    token = ""
    for _ in range(10):
        raw, token = runs_module._search_phased(experiment, phases, order, token, 2)
        seen += names(raw)
        if not token:
            break
    finite = ["high", "low"] if direction == "DESC" else ["low", "high"]
    assert seen == [*finite, "plus", "minus", "nan", "none"]

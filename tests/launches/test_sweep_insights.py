"""What a sweep's search found, on its page and in the API: the optimisation history (each
ended trial's objective, the best so far for min and max), pruned trials told apart (table,
parallel coordinates, history), parameter importances with their empty states, and the time
pruning saved. The trials are rows built with the ORM; MLflow's answer (the objective's last
value per trial) comes from a stubbed search, as messy as real runs: NaN, the +inf sentinel,
a metric never logged."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import User
from apps.launches.models import Launch, Status, Sweep, SweepStatus, Template
from apps.launches.optimizer import ObjectiveState
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.compute.fakes import make_launch, make_template
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db

INF_SENTINEL = 1.7976931348623157e308  # +inf as MLflow's SQL store answers it
LRS = [0.001, 0.003, 0.01, 0.03, 0.1]
BATCHES = [16, 32, 64]
PRUNE_REASON = "median of completed trials at step 12 was 0.41, this trial 0.78"


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()  # importances are cached by their inputs: no test sees another's


@pytest.fixture
def template(project: Project) -> Template:
    return make_template(
        project,
        parameters={
            "lr": {"type": "float", "default": 0.01, "min": 0.0001, "max": 1.0},
            "batch": {"type": "choice", "choices": BATCHES, "default": 32},
        },
    )


class Runs:
    """What MLflow's search answers for the sweep's trials: {run id: objective value}."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, metric: str) -> None:
        self.values: dict[str, Any] = {}
        self.metric = metric
        self.down = False
        self.calls = 0
        monkeypatch.setattr(MlflowGateway, "search_runs", lambda gw, *a, **k: self.search())

    def search(self) -> tuple[list[dict[str, Any]], str]:
        self.calls += 1
        if self.down:
            raise MlflowUnavailable()
        runs = [
            {"info": {"run_id": run_id}, "data": {"metrics": [{"key": self.metric, "value": value}]}}
            for run_id, value in self.values.items()
            if value is not None
        ]
        return runs, ""


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    return Runs(monkeypatch, "loss")


def make_sweep(project: Project, user: User, template: Template, planned: list[dict[str, Any]], **extra: Any) -> Sweep:
    fields: dict[str, Any] = {
        "project": project,
        "template": template,
        "created_by": user,
        "strategy": "grid",
        "space": {"lr": LRS, "batch": BATCHES},
        "planned": planned,
        "max_trials": len(planned),
        "parallelism": 3,
        "metric": "loss",
        "direction": "min",
        "mlflow_parent_run_id": "parent",
        "status": SweepStatus.SUCCEEDED,
    }
    fields.update(extra)
    return Sweep.objects.create(**fields)


def add_trial(
    sweep: Sweep,
    runs: Runs,
    index: int,
    value: Any,
    status: str = Status.SUCCEEDED,
    *,
    minutes: float = 60,
    gpus: int = 0,
    **extra: Any,
) -> Launch:
    """Trial `index` of the sweep's plan, ended with `status` after running `minutes`;
    MLflow holds `value` as the objective's last value (None: never logged)."""
    end = timezone.now() - timedelta(hours=1)
    launch = make_launch(
        sweep.project,
        sweep.created_by,
        sweep.template,
        sweep=sweep,
        trial=index,
        parameters=dict(sweep.planned[index]),
        status=status,
        gpus=gpus,
        resources={"cpu": "1", "memory": "1Gi", "gpus": gpus, "gpu_product": ""},
        mlflow_run_id=f"run-{sweep.pk}-{index}",
        started_at=end - timedelta(minutes=minutes),
        finished_at=end if status != Status.RUNNING else None,
        **extra,
    )
    runs.values[launch.mlflow_run_id] = value
    return launch


def grid(count: int) -> list[dict[str, Any]]:
    return [{"lr": lr, "batch": batch} for lr in LRS for batch in BATCHES][:count]


def insights(user: User, sweep: Sweep) -> dict[str, Any]:
    response = api_for(user).get(f"/api/v1/sweeps/{sweep.pk}/insights/")
    assert response.status_code == 200, response.content
    return response.json()


def page(user: User, sweep: Sweep, **headers: str) -> Any:
    response = client_for(user).get(reverse("launches:sweep-detail", args=[sweep.pk]), headers=headers)
    assert response.status_code in (200, 286), response.status_code
    return response


def chart_json(html: str, chart_id: str) -> dict[str, Any]:
    found = re.search(rf'<div id="{chart_id}" class="chart" data-chart="([^"]+)"', html)
    assert found, f"no chart {chart_id}"
    data = json.loads(html.split(f'<script id="{found.group(1)}" type="application/json">', 1)[1].split("</script>")[0])
    return dict(data.get("figure", data))


def trace(figure: dict[str, Any], name_starts: str) -> dict[str, Any]:
    return next(t for t in figure["data"] if str(t.get("name", "")).startswith(name_starts))


# --- the optimisation history ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("direction", "values", "best"),
    [
        ("min", [0.5, 0.7, 0.3, 0.4, 0.2], [0.5, 0.5, 0.3, 0.3, 0.2]),
        ("max", [0.5, 0.7, 0.3, 0.4, 0.9], [0.5, 0.7, 0.7, 0.7, 0.9]),
    ],
)
def test_the_history_gives_each_trials_objective_and_the_best_so_far_for_the_direction(
    direction: str, values: list[float], best: list[float], ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(5), direction=direction)
    # Created out of order (trials end in any order): the history is by trial number.
    for index in (3, 0, 4, 1, 2):
        add_trial(sweep, runs, index, values[index])

    history = insights(ada, sweep)["history"]

    assert [p["trial"] for p in history] == [1, 2, 3, 4, 5]
    assert [p["value"] for p in history] == pytest.approx(values)
    assert [p["best"] for p in history] == pytest.approx(best)
    figure = chart_json(page(ada, sweep).content.decode(), "sweep-history")
    assert trace(figure, "completed")["y"] == pytest.approx(values)
    line = trace(figure, "best so far")
    assert line["line"]["shape"] == "hv" and line["y"][-1] == pytest.approx(best[-1])


def test_pruned_nan_inf_and_missing_objectives_never_count_as_best_and_never_break_the_chart(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(8), direction="min")
    add_trial(sweep, runs, 0, 0.5)
    # Pruned at a value better than any completed trial: from mid-run, it is not a result.
    add_trial(sweep, runs, 1, 0.05, Status.PRUNED, status_reason=PRUNE_REASON, objective_curve={"5": 0.2, "12": 0.05})
    add_trial(sweep, runs, 2, "NaN")  # as MLflow's REST answer spells NaN
    add_trial(sweep, runs, 3, -INF_SENTINEL)  # -inf "wins" a min metric only if taken as a number
    add_trial(sweep, runs, 4, None)  # the objective was never logged
    add_trial(sweep, runs, 5, 0.4)
    add_trial(sweep, runs, 6, 0.9, Status.FAILED, status_reason="exit code 1")
    add_trial(sweep, runs, 7, "NaN", Status.PRUNED, objective_curve={"2": 0.7, "3": "NaN"})  # pruned for a NaN

    data = insights(ada, sweep)
    history = {p["trial"]: p for p in data["history"]}

    assert history[2]["status"] == "pruned" and history[2]["value"] == pytest.approx(0.05)
    assert history[3]["value"] == "NaN" and history[4]["value"] == "-Infinity" and history[5]["value"] is None
    assert history[8]["status"] == "pruned" and history[8]["value"] == "NaN"
    assert [history[n]["best"] for n in range(1, 9)] == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4])
    assert data["pruned"] == 2
    note = data["history_note"]
    assert "1 trial failed or cancelled" in note and "3 trials logged NaN or inf" in note
    assert "1 trial never logged loss" in note

    response = page(ada, sweep)
    assert response.context["best"][0] == pytest.approx(0.4)  # the page's "best so far" line agrees
    html = response.content.decode()
    figure = chart_json(html, "sweep-history")
    assert trace(figure, "completed")["x"] == [1, 6]
    pruned = trace(figure, "pruned")
    assert pruned["x"] == [2] and pruned["marker"]["symbol"] == "x"
    plotted = [y for t in figure["data"] for y in t["y"]]
    assert all(isinstance(y, float) and math.isfinite(y) for y in plotted)
    assert "Not plotted:" in html


def test_the_optimisers_reading_of_an_objective_wins_over_mlflows_latest_value(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(2), direction="max")
    add_trial(sweep, runs, 0, 0.99, objective=0.6, objective_state=ObjectiveState.OK)
    add_trial(sweep, runs, 1, 0.8, objective_state=ObjectiveState.MISSING)

    history = insights(ada, sweep)["history"]

    assert [p["value"] for p in history] == [0.6, None]
    assert [p["best"] for p in history] == [0.6, 0.6]


# --- pruned trials on the page ----------------------------------------------------------------
def test_pruned_trials_have_their_own_label_reason_and_grey_lines(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(12), direction="min", early_stopping={"type": "median"})
    pruned = {2, 5, 9}
    for index in range(12):
        if index in pruned:
            add_trial(sweep, runs, index, 0.8 + index / 100, Status.PRUNED, status_reason=PRUNE_REASON, minutes=15)
        else:
            add_trial(sweep, runs, index, 0.3 + index / 100)

    html = page(ada, sweep).content.decode()

    assert html.count('<span class="status status-pruned">Pruned</span>') == 3
    assert html.count(PRUNE_REASON) >= 3
    line = chart_json(html, "sweep-chart")["data"][0]["line"]
    assert [c == 0.0 for c in line["color"]] == [i in pruned for i in range(12)]
    assert all(c >= 0.1 for i, c in enumerate(line["color"]) if i not in pruned)
    assert line["colorscale"][0][1] == line["colorscale"][1][1]  # the grey band at the bottom
    assert "pruned" in line["colorbar"]["ticktext"]
    # The best (lowest) completed trial gets the top of the scale, the worst the bottom of the colours.
    best_index = 0
    assert line["color"][best_index] == pytest.approx(1.0)
    assert "3</strong> trials pruned" in html


# --- what pruning saved -----------------------------------------------------------------------
def test_gpu_hours_saved_are_the_median_run_time_minus_each_pruned_trials_times_its_gpus(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(6), resources={"gpus": 2})
    for index, minutes in enumerate([60, 80, 100]):
        add_trial(sweep, runs, index, 0.5, minutes=minutes, gpus=2)  # median 80 minutes
    add_trial(sweep, runs, 3, 0.9, Status.PRUNED, minutes=20, gpus=2)  # saved 60 min x 2 GPUs
    add_trial(sweep, runs, 4, 0.9, Status.PRUNED, minutes=50, gpus=2)  # saved 30 min x 2 GPUs
    add_trial(sweep, runs, 5, 0.9, Status.PRUNED, minutes=120, gpus=2)  # ran longer: saved nothing, not less

    data = insights(ada, sweep)

    assert data["pruned"] == 3
    assert data["gpu_hours_saved"] == pytest.approx((60 + 30) * 2 / 60)
    assert data["hours_saved"] == pytest.approx((60 + 30) / 60)
    html = page(ada, sweep).content.decode()
    assert "about <strong>3.0 GPU-hours</strong> saved" in html and "times its GPUs" in html


def test_a_cpu_sweep_shows_run_time_saved_and_no_gpu_hours(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(3), resources={"gpus": 0})
    add_trial(sweep, runs, 0, 0.5, minutes=90)
    add_trial(sweep, runs, 1, 0.5, minutes=90)
    add_trial(sweep, runs, 2, 0.9, Status.PRUNED, minutes=30)

    data = insights(ada, sweep)

    assert data["gpu_hours_saved"] is None and data["hours_saved"] == pytest.approx(1.0)
    html = page(ada, sweep).content.decode()
    assert "about <strong>1 h 0 min</strong> of run time saved" in html and "GPU-hours" not in html


@pytest.mark.parametrize(
    ("hours", "gpu_text", "time_text"),
    [
        (0.05, "3.0 GPU-minutes", "3 min 0 s"),
        (0.002, "0.1 GPU-minutes", "7.2 s"),
        (0.0005, "1.8 s of GPU time", "1.8 s"),
        (2.5, "2.5 GPU-hours", "2 h 30 min"),
    ],
)
def test_small_savings_read_in_minutes_or_seconds_never_zero_hours(hours: float, gpu_text: str, time_text: str) -> None:
    from apps.tracking.templatetags.tracking import gpu_hours, hours_duration

    assert gpu_hours(hours) == gpu_text and hours_duration(hours) == time_text


def test_savings_wait_for_a_completed_trial_to_compare_with(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(2), status=SweepStatus.RUNNING)
    add_trial(sweep, runs, 0, 0.9, Status.PRUNED, minutes=30, gpus=1)
    add_trial(sweep, runs, 1, 0.5, Status.RUNNING, gpus=1)

    data = insights(ada, sweep)

    assert data["pruned"] == 1 and data["gpu_hours_saved"] is None and data["hours_saved"] is None
    assert "shows once a trial has run to the end" in page(ada, sweep).content.decode()


# --- parameter importances ----------------------------------------------------------------------
def test_the_parameter_that_decides_the_objective_has_the_largest_importance(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(15), direction="min")
    for index, params in enumerate(sweep.planned):
        # lr decides the loss; batch adds a little noise that explains nothing.
        add_trial(sweep, runs, index, abs(math.log10(params["lr"]) + 2) + 0.001 * (index % 2))

    shares = insights(ada, sweep)["importances"]

    assert set(shares) == {"lr", "batch"}
    assert max(shares, key=shares.get) == "lr" and shares["lr"] > 0.8
    assert sum(shares.values()) == pytest.approx(1.0)
    html = page(ada, sweep).content.decode()
    bars = chart_json(html, "sweep-importances")["data"][0]
    assert bars["orientation"] == "h" and bars["y"][-1] == "lr"  # drawn at the top


def test_a_searched_parameter_that_kept_one_value_is_not_listed_at_zero(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    planned = [{**params, "momentum": 0.9} for params in grid(15)]
    sweep = make_sweep(project, ada, template, planned, space={"lr": LRS, "batch": BATCHES, "momentum": [0.9]})
    for index, params in enumerate(sweep.planned):
        add_trial(sweep, runs, index, abs(math.log10(params["lr"]) + 2) + 0.001 * (index % 2))

    shares = insights(ada, sweep)["importances"]

    assert set(shares) == {"lr", "batch"} and sum(shares.values()) == pytest.approx(1.0)


def test_importances_need_enough_completed_trials_and_say_how_many(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(6), status=SweepStatus.RUNNING)
    for index in range(3):
        add_trial(sweep, runs, index, 0.1 * index)
    add_trial(sweep, runs, 3, "NaN")  # not a result
    add_trial(sweep, runs, 4, 0.2, Status.PRUNED)  # not a result either

    data = insights(ada, sweep)

    assert data["importances"] == {}
    assert "at least 5 completed trials" in data["importances_note"] and "3 so far" in data["importances_note"]
    html = page(ada, sweep).content.decode()
    assert "3 so far" in html and 'id="sweep-importances"' not in html


def test_importances_need_two_parameters_that_vary(ada: User, project: Project, template: Template, runs: Runs) -> None:
    planned = [{"lr": lr, "batch": 32} for lr in LRS]
    sweep = make_sweep(project, ada, template, planned)
    for index in range(len(planned)):
        add_trial(sweep, runs, index, 0.1 * index)

    note = insights(ada, sweep)["importances_note"]

    assert note.startswith("Only lr varied") and "two or more parameters" in note


def test_importances_of_trials_the_study_cannot_hold_are_an_empty_state_not_an_error(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    # The plan holds values outside the space (edited rows, an old plan): Optuna refuses them.
    planned = [{"lr": 5.0 + i, "batch": BATCHES[i % 3]} for i in range(6)]
    sweep = make_sweep(project, ada, template, planned)
    for index in range(6):
        add_trial(sweep, runs, index, 0.1 * index)

    data = insights(ada, sweep)

    assert data["importances"] == {} and "could not be computed" in data["importances_note"]
    assert page(ada, sweep).status_code == 200


def test_importances_are_computed_once_per_set_of_completed_trials(
    ada: User, project: Project, template: Template, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.launches import insights as module

    sweep = make_sweep(project, ada, template, grid(7), status=SweepStatus.RUNNING)
    for index in range(6):
        add_trial(sweep, runs, index, 0.1 * index + 0.01 * (index % 3))
    computed: list[int] = []
    real = module._compute_importances

    def counted(*args: Any) -> dict[str, float]:
        computed.append(1)
        return real(*args)

    monkeypatch.setattr(module, "_compute_importances", counted)

    first = insights(ada, sweep)["importances"]
    assert insights(ada, sweep)["importances"] == first and len(computed) == 1
    add_trial(sweep, runs, 6, 0.05)
    insights(ada, sweep)
    assert len(computed) == 2


# --- the API's contract and access ----------------------------------------------------------------
def test_the_insights_endpoint_answers_its_fields_503_without_mlflow_and_404_to_outsiders(
    ada: User, omar: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(2))
    add_trial(sweep, runs, 0, 0.5)
    add_trial(sweep, runs, 1, 0.4, Status.PRUNED)

    data = insights(ada, sweep)
    assert {"history", "importances", "importances_note", "pruned", "gpu_hours_saved", "hours_saved"} <= set(data)
    detail = api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/").json()
    assert {"progress", "launches", "metric", "direction"} <= set(detail)  # the sweep's own fields stay

    assert api_for(omar).get(f"/api/v1/sweeps/{sweep.pk}/insights/").status_code == 404
    runs.down = True
    assert api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/insights/").status_code == 503


# --- the live page --------------------------------------------------------------------------------
def test_the_live_region_carries_the_new_charts_and_its_last_answer_stops_polling(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    sweep = make_sweep(project, ada, template, grid(6), status=SweepStatus.RUNNING)
    for index in range(5):
        add_trial(sweep, runs, index, 0.1 * index + 0.05 * (index % 2))
    running = add_trial(sweep, runs, 5, 0.2, Status.RUNNING)
    fragment = {"HX-Request": "true", "HX-Target": "sweep"}

    live = page(ada, sweep, **fragment)
    html = live.content.decode()
    assert live.status_code == 200 and 'hx-trigger="every 5s"' in html
    assert 'id="sweep-history"' in html and 'id="sweep-importances"' in html
    assert "1 trial still running" in html

    Launch.objects.filter(pk=running.pk).update(status=Status.SUCCEEDED, finished_at=timezone.now())
    Sweep.objects.filter(pk=sweep.pk).update(status=SweepStatus.SUCCEEDED, finished_at=timezone.now())
    last = page(ada, sweep, **fragment)
    html = last.content.decode()
    assert last.status_code == 286 and "hx-trigger" not in html
    assert trace(chart_json(html, "sweep-history"), "completed")["x"] == [1, 2, 3, 4, 5, 6]


def test_the_sweep_page_makes_as_many_queries_for_25_trials_as_for_6(
    ada: User, project: Project, template: Template, runs: Runs
) -> None:
    def count(trials: int) -> int:
        planned = [{"lr": 0.001 * (i + 1), "batch": BATCHES[i % 3]} for i in range(trials)]
        sweep = make_sweep(project, ada, template, planned, space={"lr": [p["lr"] for p in planned], "batch": BATCHES})
        for index in range(trials):
            status = Status.PRUNED if index % 4 == 3 else Status.SUCCEEDED
            add_trial(sweep, runs, index, 0.01 * index, status, status_reason=PRUNE_REASON)
        client = client_for(ada)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse("launches:sweep-detail", args=[sweep.pk]))
        assert response.status_code == 200 and len(response.context["trials"]) == trials
        assert response.context["importance_figure"] is not None
        return len(queries)

    assert count(25) == count(6)


def test_the_new_charts_show_metric_and_parameter_names_as_text_not_markup(
    ada: User, project: Project, runs: Runs
) -> None:
    marked = "<a href='https://evil.example'>lr</a>"
    template = make_template(
        project,
        parameters={marked: {"type": "float", "default": 0.1}, "batch": {"type": "choice", "choices": BATCHES}},
    )
    planned = [{marked: lr, "batch": batch} for lr in LRS for batch in BATCHES][:8]
    runs.metric = "<b>loss</b>"
    sweep = make_sweep(project, ada, template, planned, space={marked: LRS, "batch": BATCHES}, metric="<b>loss</b>")
    for index, params in enumerate(planned):
        add_trial(sweep, runs, index, params[marked] * 10 + 0.001 * index)

    html = page(ada, sweep).content.decode()

    history = json.dumps(chart_json(html, "sweep-history"))
    bars = json.dumps(chart_json(html, "sweep-importances"))
    assert "<b>" not in history and "&lt;b&gt;loss&lt;/b&gt;" in history
    assert "<a " not in bars and "&lt;a href=" in bars

"""Parameter axes that span decades are really logarithmic on every chart (the sweep's and
the compare page's parallel coordinates, the compare scatter), with ticks at powers of ten
labelled `1e-4` (never Plotly's SI "100μ"); an axis whose values are all equal stays at
the value instead of stretching past the data (0.872-1.066 for an accuracy of 0.9)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from apps.launches.charts import sweep_figure
from apps.launches.models import Launch, Sweep
from apps.tracking.charts import numeric_dimension, parallel_coordinates, power_label, scatter
from apps.tracking.runs import Run

RATES = [1e-5, 3e-5, 1e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0]


def _run(index: int, params: dict[str, str], metrics: dict[str, Any]) -> Run:
    return Run.from_mlflow(
        {
            "info": {"run_id": f"{index:032x}", "run_name": f"run-{index}", "experiment_id": "1", "status": "FINISHED"},
            "data": {
                "params": [{"key": k, "value": v} for k, v in params.items()],
                "metrics": [{"key": k, "value": v, "step": 0, "timestamp": 1} for k, v in metrics.items()],
            },
        }
    )


def _dimension(figure: dict[str, Any], label: str) -> dict[str, Any]:
    [found] = [d for d in figure["data"][0]["dimensions"] if d["label"].startswith(label)]
    return found


def _assert_log(dimension: dict[str, Any], values: list[float]) -> None:
    assert dimension["label"].endswith(" (log)")
    assert dimension["values"] == pytest.approx([math.log10(v) for v in values])
    # Ticks at the powers of ten, at their log positions, labelled 1e-5 ... 1.
    assert dimension["ticktext"] == ["1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1"]
    assert dimension["tickvals"] == pytest.approx([-5, -4, -3, -2, -1, 0])
    assert dimension["range"] == pytest.approx([-5, 0])
    assert "μ" not in json.dumps(dimension, ensure_ascii=False)


def test_power_labels() -> None:
    assert [power_label(e) for e in (-4, -1, 0, 2, 3, 4)] == ["1e-4", "1e-1", "1", "100", "1000", "1e4"]


def test_the_sweep_axis_declared_log_is_drawn_on_a_log_scale_and_ties_stay_at_the_value() -> None:
    sweep = Sweep(
        space={"learning_rate": {"min": 1e-5, "max": 1, "log": True}, "epochs": [20]},
        metric="accuracy",
        direction="max",
    )
    trials = [Launch(pk=i + 1, parameters={"learning_rate": rate, "epochs": 20}) for i, rate in enumerate(RATES)]
    metrics = {i + 1: {"accuracy": 0.9} for i in range(len(RATES))}
    metrics[2]["accuracy"] = 1.7976931348623157e308  # +inf as MLflow stores it: left out
    figure = sweep_figure(sweep, trials, metrics)
    assert figure is not None

    kept = [rate for i, rate in enumerate(RATES) if i != 1]
    _assert_log(_dimension(figure, "learning_rate"), kept)
    # Seven trials spread over five decades, not piled at the bottom of a linear axis.
    lows = [v for v in _dimension(figure, "learning_rate")["values"] if v < -4]
    assert len(lows) == 1
    for label, value in (("epochs", 20.0), ("accuracy", 0.9)):
        tied = _dimension(figure, label)
        assert tied["values"] == [value] * len(kept)
        low, high = tied["range"]
        assert low < value < high and high - low <= 0.01 * value
        assert tied["tickvals"] == [value] and tied["ticktext"] == [format(value, "g")]


def test_a_declared_log_axis_with_a_non_positive_value_stays_linear() -> None:
    dimension = numeric_dimension("shift", [0.0, 1e-3, 1.0], log=True)
    assert dimension["values"] == [0.0, 1e-3, 1.0] and "(log)" not in dimension["label"]


def test_the_compare_parallel_coordinates_and_scatter_use_log_axes_for_rates_spanning_decades() -> None:
    runs = [_run(i, {"lr": str(rate), "seed": "7"}, {"loss": 1.0 - i / 10}) for i, rate in enumerate(RATES)]
    figure = parallel_coordinates(runs, ["lr", "seed"], "loss", "min")
    assert figure is not None
    _assert_log(_dimension(figure, "lr"), RATES)
    seed = _dimension(figure, "seed")
    assert seed["tickvals"] == [7.0] and seed["range"][0] < 7.0 < seed["range"][1]

    plot = scatter(runs, "lr", "loss")
    assert plot is not None
    xaxis = plot["layout"]["xaxis"]
    assert xaxis["type"] == "log"
    assert xaxis["ticktext"] == ["1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1"]
    assert xaxis["tickvals"] == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0])
    assert plot["data"][0]["x"] == pytest.approx(RATES)


def test_params_within_a_decade_stay_linear_and_non_finite_metrics_are_left_out() -> None:
    runs = [_run(i, {"lr": str(0.1 + i / 100)}, {"loss": 0.5 + i}) for i in range(4)]
    runs.append(_run(9, {"lr": "0.2"}, {"loss": "NaN"}))
    figure = parallel_coordinates(runs, ["lr"], "loss", "min")
    assert figure is not None
    lr = _dimension(figure, "lr")
    assert "(log)" not in lr["label"] and lr["values"] == pytest.approx([0.1, 0.11, 0.12, 0.13])
    assert lr["range"] == pytest.approx([0.1, 0.13])
    assert figure["data"][0]["line"]["color"] == [0.5, 1.5, 2.5, 3.5]
    plot = scatter(runs, "lr", "loss")
    assert plot is not None and len(plot["data"][0]["x"]) == 4 and plot["layout"]["xaxis"].get("type") != "log"

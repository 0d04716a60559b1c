"""Plotly figures of runs, built here from already-downsampled series and sent as JSON
(static/plinth/charts.js only draws them). Line charts are assembled as text around the
stored JSON arrays — building hundreds of traces through plotly.graph_objects, or even
parsing and printing them again, would take seconds — and reach the page as
`apps.core.figures.Chart` through `json_script`; the two small figures are plain dicts.

The chart fits the data, as MLflow's and W&B's run charts do:

* a metric with a history is a line chart against the step, or against wall-clock time
  when its steps do not vary (`log_metric` without a step logs every point at step 0);
  each such chart also carries the steps and times of its traces, and the switch above the
  charts (charts.js) redraws them against step, time or time since the run's start;
* a metric every run logged once is a bar per run, not dots on a meaningless step axis;
* a metric with nothing to draw is an empty state with a sentence, never an axis;
* NaN and ±inf (MLflow's ±1.797e308 sentinels included, apps.core.numbers) are never
  plotted as numbers: the line has a gap where they were and a marker at the chart's top
  (NaN, +inf) or bottom (-inf) says what and where ("inf at step 12").

Parameter axes (parallel coordinates, scatter, the sweep chart) are logarithmic when the
values span decades (or the sweep space says `log: true`), with ticks at powers of ten
labelled `1e-4`; an axis whose values are all equal is a single tick, not a stretched range.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from apps.core.chart_text import chart_text, chart_texts, chart_values
from apps.core.figures import Chart, JSONText
from apps.core.numbers import is_finite, normalise
from apps.tracking.runs import Run
from apps.tracking.series import Series

# Traces after the first VISIBLE_TRACES start hidden (legendonly): a click in the legend
# shows one; hundreds of drawn lines would only be noise and slow the page down.
VISIBLE_TRACES = 20
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
]  # fmt: skip
CONFIG = {"responsive": True, "displaylogo": False}
MARKERS_UP_TO = 50
# x axes a line chart can be drawn against (the switch above the charts).
AXES = ("step", "time", "relative")
AXIS_TITLES = {"step": "step", "time": "time (UTC)", "relative": "time since the run started"}
# Where non-finite points are marked, on a hidden 0..1 axis over the chart, and with what.
MARK_AT = {"inf": 0.97, "NaN": 0.97, "-inf": 0.03}
MARK_SYMBOL = {"inf": "triangle-up", "NaN": "x", "-inf": "triangle-down"}
# A parameter axis is logarithmic when its positive values span this many decades.
LOG_DECADES = 2


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def trace_names(runs: list[Run]) -> dict[str, str]:
    """Each run's name, with the start of its id where another run has the same name,
    escaped for Plotly (`chart_text`: a run name is whatever was logged)."""
    counts = Counter(run.display_name for run in runs)
    return {
        run.run_id: chart_text(
            run.display_name if counts[run.display_name] == 1 else f"{run.display_name} ({run.run_id[:7]})"
        )
        for run in runs
    }


def _ends(array_json: str) -> tuple[str, str]:
    """The first and last element of a JSON array of numbers, as text, without parsing it."""
    inner = array_json.strip()[1:-1]
    return inner.split(",", 1)[0].strip(), inner.rsplit(",", 1)[-1].strip()


def _steps_vary(found: Series) -> bool:
    """Whether the kept points have more than one step (steps are stored in order)."""
    first, last = _ends(found.steps_json)
    return first != last


def _has_times(found: Series) -> bool:
    return found.timestamps_json.strip() not in ("", "[]")


def _with_gaps(found: Series) -> tuple[str, str, str]:
    """(steps, values, timestamps) JSON of a series with a null value where each non-finite
    point was, in step order, so that Plotly breaks the line there instead of joining the
    finite neighbours as if nothing had happened."""
    steps, values = found.steps, found.values
    times = found.timestamps if _has_times(found) else []
    order = [(s, times[i] if times else 0) for i, s in enumerate(steps)]
    for step, stamp, _kind in sorted((int(m[0]), int(m[1]), m[2]) for m in found.nonfinite):
        at = bisect.bisect_right(order, (step, stamp))
        order.insert(at, (step, stamp))
        steps.insert(at, step)
        values.insert(at, None)  # type: ignore[arg-type]
        if times:
            times.insert(at, stamp)
    dump = json.dumps
    return dump(steps, separators=(",", ":")), dump(values, separators=(",", ":")), dump(times, separators=(",", ":"))


def _run_start(run: Run, found: Series) -> int:
    """Time zero of the relative axis (ms): the run's start, else its first point."""
    if run.start_time:
        return int(run.start_time)
    first = _ends(found.timestamps_json)[0] if _has_times(found) else ""
    return int(first) if first.lstrip("-").isdigit() else 0


def _mark_trace(name: str, group: str, colour: str, marks: list[list[Any]], x: list[Any]) -> dict[str, Any]:
    """Markers, on the hidden 0..1 axis over the chart, for non-finite points at `x`."""
    return {
        "type": "scatter",
        "mode": "markers",
        "yaxis": "y2",
        "x": x,
        "y": [MARK_AT.get(str(m[2]), 0.97) for m in marks],
        "text": [f"{m[2]} at step {m[0]}" for m in marks],
        "marker": {"symbol": [MARK_SYMBOL.get(str(m[2]), "x") for m in marks], "size": 9, "color": colour},
        "name": name,
        "legendgroup": group,
        "showlegend": False,
        "cliponaxis": False,
        "hovertemplate": "%{text}<extra>%{fullData.name}</extra>",
    }


def _layout(key: str, xaxis: dict[str, Any], traces: int, marked: bool) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": chart_text(key), "x": 0.01},
        "height": 340,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "xaxis": xaxis,
        "hovermode": "closest",
        "showlegend": traces > 1,
        "legend": {"font": {"size": 11}},
    }
    if marked:
        layout["yaxis2"] = {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True}
        layout["annotations"] = [
            {
                "text": "▲ inf  ▼ -inf  ✕ NaN (not plotted)",
                "xref": "paper",
                "yref": "paper",
                "x": 1,
                "y": 1.08,
                "xanchor": "right",
                "showarrow": False,
                "font": {"size": 10, "color": "#666"},
            }
        ]
    return layout


def _axis(mode: str) -> dict[str, Any]:
    """The x axis of a line chart drawn against `mode` (one of AXES)."""
    axis: dict[str, Any] = {"title": {"text": AXIS_TITLES[mode]}}
    if mode == "time":
        axis["type"] = "date"  # Plotly reads ms since the epoch as UTC dates
    return axis


def _empty(chart_id: str, key: str, message: str) -> Chart:
    text = json.dumps({"id": chart_id, "key": key, "kind": "empty", "traces": 0, "message": message})
    return Chart(chart_id, key, "empty", JSONText(text), message)


def _bar_chart(chart_id: str, key: str, shown: list[tuple[int, Run, Series]], names: dict[str, str]) -> Chart:
    """One bar per run for a metric each run logged once (a non-finite value is a marker
    where its bar would be, with its name: "NaN", "inf")."""
    x = [names[run.run_id] for _, run, _ in shown]
    y = [found.last if found.points else None for _, _, found in shown]
    bars = {
        "type": "bar",
        "x": x,
        "y": y,
        "marker": {"color": [color(index) for index, _, _ in shown]},
        "hovertemplate": "%{x}<br>%{y}<extra></extra>",
        "showlegend": False,
    }
    data: list[dict[str, Any]] = [bars]
    marked = [(name, found.nonfinite[0]) for name, (_, _, found) in zip(x, shown, strict=True) if not found.points]
    if marked:
        data.append(
            _mark_trace("non-finite", "non-finite", "#444", [m for _, m in marked], [name for name, _ in marked])
        )
        data[-1]["text"] = [str(m[2]) for _, m in marked]
        data[-1]["mode"] = "markers+text"
        data[-1]["textposition"] = "bottom center"
    layout = _layout(key, {"type": "category"}, 1, bool(marked))
    layout["yaxis"] = {"title": {"text": "value (logged once)"}}
    text = json.dumps(
        {"id": chart_id, "key": key, "kind": "bar", "traces": len(shown), "figure": {"data": data, "layout": layout}},
        allow_nan=False,
    )
    return Chart(chart_id, key, "bar", JSONText(text))


def line_charts(
    runs: list[Run], keys: list[str], series_of: Callable[[str, str], Series | None], *, prefix: str = "chart"
) -> list[Chart]:
    """One chart per metric, in `keys` order, each a `Chart` whose JSON is {id, key, kind,
    traces, ...}:

    kind "line": `figure` {data, layout}, one trace per run (x = step, or time when the
    steps do not vary), the same color for a run on every chart, `axis` (the x drawn:
    "step" or "time") and `alt`, per trace in `data` order, {time, t0} (drawn against
    step) or {step, t0} (drawn against time): the x the trace is not drawn with (times in
    ms since the epoch) and the run's start (ms), from which the page redraws the chart
    against another x. kind "bar": every run logged the metric
    once; `figure` has one bar per run. kind "empty": nothing to draw; `message` says why.
    Non-finite points are marked, never plotted (see the module docstring)."""
    charts: list[Chart] = []
    names = trace_names(runs)
    for number, key in enumerate(keys):
        chart_id = f"{prefix}-{number}"
        shown = [
            (index, run, found)
            for index, run in enumerate(runs)
            if (found := series_of(run.run_id, key)) is not None and (found.points or found.nonfinite_json != "[]")
        ]
        if not shown:
            charts.append(_empty(chart_id, key, f"No values of {key} to draw."))
            continue
        if not any(found.points for _, _, found in shown):
            kinds = Counter(str(m[2]) for _, _, found in shown for m in found.nonfinite)
            listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            charts.append(_empty(chart_id, key, f"No finite values of {key} to draw ({listed})."))
            continue
        if all(found.points + len(found.nonfinite) <= 1 for _, _, found in shown):
            charts.append(_bar_chart(chart_id, key, shown, names))
            continue
        timed = all(_has_times(found) for _, _, found in shown)
        mode = "time" if timed and not any(_steps_vary(found) for _, _, found in shown if found.points > 1) else "step"
        traces: list[str] = []
        alternatives: list[str] = []
        marked = False
        for index, run, found in shown:
            head = {
                "type": "scatter",
                # A short series gets markers too: a metric logged once is a dot, not nothing.
                "mode": "lines" if found.points > MARKERS_UP_TO else "lines+markers",
                "marker": {"size": 5},
                "name": names[run.run_id],
                "legendgroup": run.run_id,
                "line": {"color": color(index), "width": 1.5},
                "hovertemplate": "%{x}<br>%{y}<extra>%{fullData.name}</extra>",
            }
            if len(traces) >= VISIBLE_TRACES:
                head["visible"] = "legendonly"
            marks = found.nonfinite if found.nonfinite_json != "[]" else []
            if marks:
                steps_json, values_json, times_json = _with_gaps(found)
            else:
                steps_json, values_json, times_json = found.steps_json, found.values_json, found.timestamps_json
            x_json = times_json if mode == "time" else steps_json
            traces.append(json.dumps(head)[:-1] + ',"x":' + x_json + ',"y":' + values_json + "}")
            start = _run_start(run, found)
            # The x the trace is drawn with is not repeated: the page takes it from the trace.
            other = ('"time":' + times_json) if mode == "step" else ('"step":' + steps_json)
            alternatives.append("{" + other + ',"t0":' + str(start) + "}")
            if marks:
                marked = True
                mark = _mark_trace(names[run.run_id], run.run_id, color(index), marks, [])
                mark["x"] = [m[1] for m in marks] if mode == "time" else [m[0] for m in marks]
                if "visible" in head:
                    mark["visible"] = "legendonly"
                traces.append(json.dumps(mark))
                other_x = [m[1] for m in marks] if mode == "step" else [m[0] for m in marks]
                alternatives.append(json.dumps({"time" if mode == "step" else "step": other_x, "t0": start}))
        layout = _layout(key, _axis(mode), len(shown), marked)
        text = (
            '{"id":' + json.dumps(chart_id) + ',"key":' + json.dumps(key) + ',"kind":"line","traces":'
            + str(len(shown)) + ',"axis":"' + mode + '","alt":[' + ",".join(alternatives) + "]"
            + ',"figure":{"data":[' + ",".join(traces) + '],"layout":' + json.dumps(layout) + "}}"
        )  # fmt: skip
        charts.append(Chart(chart_id, key, "line", JSONText(text)))
    return charts


def power_label(exponent: int) -> str:
    """The tick label of 10**exponent: "1e-4" below one, "1", "10", "100", "1000", then
    "1e4" and up; never Plotly's SI prefixes ("100μ"), which read badly for parameters."""
    return str(10**exponent) if 0 <= exponent <= 3 else f"1e{exponent}"


def _number_label(value: float) -> str:
    return format(value, ".6g")


def _spans_decades(numbers: list[float]) -> bool:
    return bool(numbers) and min(numbers) > 0 and max(numbers) / min(numbers) >= 10**LOG_DECADES


def _tie_range(value: float) -> list[float]:
    """A small range around a value every point shares (Plotly would stretch it)."""
    epsilon = abs(value) * 1e-3 or 1e-3
    return [value - epsilon, value + epsilon]


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks at the powers of ten from `low` to `high` (positive numbers): (values, labels),
    at most about ten of them (every second, third... power when the span is wider)."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    every = max(1, math.ceil((last - first + 1) / 10))
    exponents = list(range(first, last + 1, every))
    return [float(10**e) for e in exponents], [power_label(e) for e in exponents]


def numeric_dimension(label: str, numbers: list[float], *, log: bool | None = None) -> dict[str, Any]:
    """A parallel-coordinates dimension of finite numbers. Logarithmic when `log` is true
    and every value is positive, or when `log` is None (decide from the data) and the
    values span LOG_DECADES decades or more: Plotly's parcoords has no log axis, so the
    values are log10(value) with ticks at the powers of ten labelled `1e-4` and " (log)"
    after the label. All values equal: one tick at the value and a small range around it."""
    low, high = min(numbers), max(numbers)
    logarithmic = (log if log is not None else _spans_decades(numbers)) and low > 0
    if logarithmic:
        logs = [math.log10(v) for v in numbers]
        tickvals, ticktext = log_ticks(low, high)
        lo, hi = min(logs), max(logs)
        return {
            "label": chart_text(label) + " (log)",
            "values": logs,
            "range": [lo, hi] if hi > lo else _tie_range(lo),
            "tickvals": [math.log10(v) for v in tickvals] if hi > lo else [lo],
            "ticktext": ticktext if hi > lo else [_number_label(low)],
        }
    if high == low:
        return {
            "label": chart_text(label),
            "values": numbers,
            "range": _tie_range(low),
            "tickvals": [low],
            "ticktext": [_number_label(low)],
        }
    return {"label": chart_text(label), "values": numbers, "range": [low, high]}


def _as_numbers(values: list[Any]) -> list[float] | None:
    """The values as finite floats, or None when any is not a finite number (bools are not
    numbers here: a flag is a category)."""
    numbers: list[float] = []
    for value in values:
        if isinstance(value, bool) or not is_finite(value):
            return None
        numbers.append(normalise(value))
    return numbers


def param_dimension(label: str, values: list[Any], *, log: bool | None = None) -> dict[str, Any]:
    """A parallel-coordinates dimension of a parameter's values: numeric (see
    `numeric_dimension`; `log` as there) when every value is a finite number, otherwise
    one tick per distinct value (as text, sorted)."""
    numbers = _as_numbers(values)
    if numbers is not None and numbers:
        return numeric_dimension(label, numbers, log=log)
    labels = sorted({str(v) for v in values})
    return {
        "label": chart_text(label),
        "values": [labels.index(str(v)) for v in values],
        "tickvals": list(range(len(labels))),
        "ticktext": chart_texts(labels),
    }


def parallel_coordinates(runs: list[Run], params: list[str], metric: str, direction: str) -> dict[str, Any] | None:
    """Params → `metric` for the runs that have it; None when fewer than two do."""
    scored = [run for run in runs if is_finite(run.metrics.get(metric))]
    if len(scored) < 2 or not params:
        return None
    values = [normalise(run.metrics[metric]) for run in scored]
    dimensions = [param_dimension(p, [run.params.get(p, "") for run in scored]) for p in params]
    dimensions.append(numeric_dimension(metric, values, log=False))
    return {
        "data": [
            {
                "type": "parcoords",
                "line": {
                    "color": values,
                    "colorscale": "Viridis",
                    "showscale": True,
                    "reversescale": direction == "min",
                },
                "dimensions": dimensions,
            }
        ],
        "layout": {"height": 400, "margin": {"l": 70, "r": 50, "t": 50, "b": 30}},
    }


def scatter(runs: list[Run], param: str, metric: str) -> dict[str, Any] | None:
    """One point per run: `param` (x; numbers when they all are) against `metric` (y)."""
    shown = [run for run in runs if is_finite(run.metrics.get(metric)) and param in run.params]
    if not shown:
        return None
    position = {run.run_id: index for index, run in enumerate(runs)}
    names = trace_names(shown)
    numbers = _as_numbers([run.params[param] for run in shown])
    # Numbers when every value is one, else categories.
    xs: list[Any] = list(numbers) if numbers is not None else [str(run.params[param]) for run in shown]
    xaxis: dict[str, Any] = {"title": {"text": chart_text(param)}}
    if numbers is not None and _spans_decades(numbers):
        # Learning rates and the like span decades: a log axis, ticks labelled 1e-4.
        tickvals, ticktext = log_ticks(min(numbers), max(numbers))
        xaxis.update(type="log", tickvals=tickvals, ticktext=ticktext)
    elif numbers is not None and min(numbers) == max(numbers):
        xaxis.update(range=_tie_range(numbers[0]), tickvals=[numbers[0]], ticktext=[_number_label(numbers[0])])
    elif numbers is None:
        xaxis["type"] = "category"
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": chart_values(xs),
                "y": [normalise(run.metrics[metric]) for run in shown],
                "text": [names[run.run_id] for run in shown],
                "customdata": [run.run_id for run in shown],
                "marker": {"size": 9, "color": [color(position[run.run_id]) for run in shown]},
                # Names enter the hover label through `meta`, never the template itself: a
                # param called "%{y}" is text, not a placeholder.
                "meta": [chart_text(param), chart_text(metric)],
                "hovertemplate": "%{text}<br>%{meta[0]} %{x}<br>%{meta[1]} %{y}<extra></extra>",
            }
        ],
        "layout": {
            "height": 380,
            "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
            "xaxis": xaxis,
            "yaxis": {"title": {"text": chart_text(metric)}},
        },
    }

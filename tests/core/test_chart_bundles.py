"""Each chart names the smallest official plotly.js bundle that draws it (basic: scatter,
bar, pie; cartesian: heatmap, box, histogram...; strict: the rest, parcoords among them),
the first chart of a page preloads its bundle with its Subresource Integrity, and every
page tells static/plinth/charts.js where the bundles are. tests/e2e/test_csp.py draws them
in Chromium under the site's policy."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.template import Context, Template
from django.template.loader import render_to_string

from apps.accounts.models import User
from apps.core import figures, vendor
from apps.core.figures import BUNDLES, JSONText, bundle_for, trace_types
from apps.tracking.charts import line_charts
from apps.tracking.runs import Run
from apps.tracking.series import Series
from tests.conftest import client_for
from tests.gpus.test_pages import fleet  # noqa: F401 - a fixture

PARCOORDS: dict[str, Any] = {
    "data": [{"type": "parcoords", "dimensions": [{"label": "lr", "values": [1, 2]}]}],
    "layout": {},
}
HEATMAP: dict[str, Any] = {"data": [{"type": "heatmap", "z": [[1, 2]]}], "layout": {"xaxis": {"type": "date"}}}
LINE: dict[str, Any] = {"data": [{"x": [1, 2], "y": [3, 4]}], "layout": {"xaxis": {"type": "log"}}}  # no type: scatter
BARS: dict[str, Any] = {
    "data": [{"type": "bar", "x": ["a"], "y": [1]}, {"type": "scatter", "x": ["a"], "y": [0.9]}],
    "layout": {},
}


def sri(path: str) -> str:
    found = finders.find(path)
    assert isinstance(found, str), f"{path} is not vendored: run `python -m apps.core.vendor`"
    return "sha384-" + base64.b64encode(hashlib.sha384(Path(found).read_bytes()).digest()).decode()


def preloads(html: str) -> list[tuple[str, str]]:
    """(href, integrity) of each preloaded script."""
    return re.findall(r'<link rel="preload" href="([^"]+)" as="script" integrity="([^"]+)">', html)


def containers(html: str) -> dict[str, str]:
    """Each chart container's id → the bundle it names."""
    found = re.findall(r'<div id="([^"]+)" class="chart" data-chart="[^"]+" data-plotly-bundle="([^"]*)"', html)
    return dict(found)


@pytest.mark.parametrize(
    ("figure", "bundle"),
    [
        (LINE, "basic"),
        (BARS, "basic"),
        ({"data": [{"type": "pie", "values": [1, 2]}], "layout": {}}, "basic"),
        (HEATMAP, "cartesian"),
        ({"data": [LINE["data"][0], {"type": "box", "y": [1, 2]}], "layout": {}}, "cartesian"),
        (PARCOORDS, "strict"),
        ({"data": [{"type": "scattergl", "x": [1], "y": [1]}], "layout": {}}, "strict"),
        ({"figure": HEATMAP, "kind": "heatmap"}, "cartesian"),  # a chart wrapping a figure
    ],
)
def test_a_figure_gets_the_smallest_bundle_that_draws_every_trace(figure: dict[str, Any], bundle: str) -> None:
    assert bundle_for(figure).name == bundle
    assert bundle_for(JSONText(json.dumps(figure))).name == bundle, "the same, from the figure's JSON text"


def test_a_page_of_charts_gets_the_bundle_that_draws_all_of_them() -> None:
    assert bundle_for(LINE, BARS).name == "basic"
    assert bundle_for(LINE, HEATMAP).name == "cartesian"
    assert bundle_for(HEATMAP, PARCOORDS, LINE).name == "strict"
    assert bundle_for().name == "basic" and trace_types(None) == frozenset()


def test_a_trace_type_no_smaller_bundle_knows_gets_the_strict_one() -> None:
    assert bundle_for({"data": [{"type": "sankey"}, {"type": "newtrace", "x": [1]}]}).name == "strict"
    # In JSON text only Plotly's trace types count: layout has "type" keys of its own.
    sankey = JSONText('{"data": [{"type": "sankey"}], "layout": {"xaxis": {"type": "date"}}}')
    assert bundle_for(sankey).name == "strict"


def test_each_bundle_draws_what_the_smaller_ones_draw() -> None:
    names = [bundle.name for bundle in BUNDLES]
    assert names == ["basic", "cartesian", "strict"]
    for smaller, larger in itertools.pairwise(BUNDLES):
        assert smaller.traces is not None and larger.draws(smaller.traces)
    assert BUNDLES[-1].traces is None and BUNDLES[-1].draws(figures.known_trace_types())


def test_only_real_trace_types_count_in_json_text_never_layout_types_or_logged_text() -> None:
    name = 'evil "type": "parcoords" \\"type":"heatmap"'
    run = Run.from_mlflow({"info": {"run_id": "r" * 32, "run_name": name, "status": "FINISHED"}, "data": {}})
    history = Series("r" * 32, "k", "[0,1,2]", "[0.1,0.2,0.3]", 3, 0.1, 0.3, 0.3, False, "[1000,2000,3000]")
    chart = line_charts([run], ['"type":"contour"'], lambda run_id, key: history)[0]
    assert chart.kind == "line" and "parcoords" in chart.json and "contour" in chart.json
    assert trace_types(chart.json) == {"scatter"}
    assert bundle_for(chart.json).name == "basic"
    assert trace_types(JSONText('{"layout": {"xaxis": {"type": "date"}, "shapes": [{"type": "line"}]}}')) == set()


def test_the_chart_container_names_its_bundle_and_only_the_first_chart_preloads_it() -> None:
    page = Template(
        '{% include "core/_chart.html" with chart_id="a" figure=line %}'
        '{% include "core/_chart.html" with chart_id="b" figure=parcoords %}'
        '{% include "core/_chart.html" with chart_id="c" figure=line %}'
    ).render(Context({"line": LINE, "parcoords": PARCOORDS}))
    assert containers(page) == {"a": "basic", "b": "strict", "c": "basic"}
    assert preloads(page) == [("/static/vendor/plotly-basic.min.js", sri("vendor/plotly-basic.min.js"))]
    assert page.index("<link") < page.index('<div id="a"')
    alone = render_to_string("core/_chart.html", {"chart_id": "p", "figure": PARCOORDS})
    assert preloads(alone) == [("/static/vendor/plotly-strict.min.js", sri("vendor/plotly-strict.min.js"))]


def test_a_missing_bundle_file_has_no_integrity(monkeypatch: pytest.MonkeyPatch) -> None:
    assert figures.integrity("vendor/plotly-basic.min.js") == sri("vendor/plotly-basic.min.js")
    assert figures.integrity("vendor/no-such-bundle.min.js") == ""
    monkeypatch.setattr(figures, "BUNDLES", (figures.Bundle("gone", "vendor/no-such-bundle.min.js", None),))
    html = render_to_string("core/_chart.html", {"chart_id": "g", "figure": LINE})
    assert '<link rel="preload" href="/static/vendor/no-such-bundle.min.js" as="script">' in html


def test_every_bundle_is_vendored_from_its_npm_package() -> None:
    vendored = {f"vendor/{out}" for package in vendor.PACKAGES for out in package["files"].values()}  # type: ignore[attr-defined]
    assert {bundle.path for bundle in BUNDLES} <= vendored
    names = {str(package["name"]) for package in vendor.PACKAGES}
    assert {f"plotly.js-{bundle.name}-dist-min" for bundle in BUNDLES} <= names


@pytest.mark.django_db
def test_pages_list_the_bundles_and_a_chart_page_preloads_the_one_its_first_chart_needs(
    fleet: dict[str, Any],  # noqa: F811 - the fixture
    vic: User,
) -> None:
    client = client_for(vic)
    html = client.get("/gpus/").content.decode()
    assert containers(html) == {"heatmap": "cartesian"}
    assert preloads(html) == [("/static/vendor/plotly-cartesian.min.js", sri("vendor/plotly-cartesian.min.js"))]
    listed = re.search(r'<script src="[^"]*charts[^"]*\.js" data-plotly-bundles="([^"]+)" defer>', html)
    assert listed, "charts.js's tag lists the bundles"
    bundles = json.loads(listed.group(1).replace("&quot;", '"'))
    assert [(b["name"], b["src"], b["integrity"]) for b in bundles] == [
        (bundle.name, f"/static/{bundle.path}", sri(bundle.path)) for bundle in BUNDLES
    ]
    launch = client.get(f"/gpus/launches/{fleet['mine'].pk}/").content.decode()
    assert containers(launch) == {"gpu-usage-chart": "basic"}
    assert [href for href, _ in preloads(launch)] == ["/static/vendor/plotly-basic.min.js"]
    # The same chart in the panel's htmx fragment: its page has plotly.js already.
    swap = {"HX-Request": "true", "HX-Target": "gpu-usage"}
    fragment = client.get(f"/gpus/launches/{fleet['mine'].pk}/", headers=swap).content.decode()
    assert containers(fragment) == {"gpu-usage-chart": "basic"} and "<link" not in fragment
    account = client.get("/account/").content.decode()
    assert "data-plotly-bundles=" in account and 'class="chart"' not in account
    assert '<link rel="preload"' not in account

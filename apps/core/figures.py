"""Figures into pages: every chart's data goes into its page through Django's `json_script`
(apps.core.templatetags.charts, `{{ figure|chart_data:"id" }}`) and is drawn by the one
static chart module (static/plinth/charts.js); no inline script, no hand-made escaping.

History charts are assembled as JSON text around the stored arrays (apps.tracking.charts):
parsing hundreds of 1,000-point series only to print them again would cost seconds on a
large comparison. `JSONText` carries such text through `json_script` unchanged, which then
escapes it exactly as it escapes anything else.

Each chart also names the smallest official plotly.js bundle that draws it (`BUNDLES`,
vendored by apps.core.vendor): charts.js loads that one when the chart is about to be
drawn, so a page of line charts parses 1.2 MB of plotly.js instead of the 5.2 MB strict
bundle, and a page without charts none."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.serializers.json import DjangoJSONEncoder
from django.templatetags.static import static
from django.utils.html import json_script
from django.utils.safestring import SafeString


class JSONText(str):
    """Text that is already JSON (a value, not a string to quote)."""


class _Encoder(DjangoJSONEncoder):
    def encode(self, o: Any) -> str:
        if isinstance(o, JSONText):
            return str(o)
        return super().encode(o)


def chart_data(value: Any, element_id: str) -> SafeString:
    """`<script type="application/json" id=element_id>`, as Django's `json_script` writes
    it; a `JSONText` value goes in as the JSON it already is."""
    return json_script(value, element_id, encoder=_Encoder)


@dataclass(frozen=True)
class Chart:
    """One chart of a page: `id` of its container, `key` it shows (e.g. the metric),
    `kind` ("line", "bar" or "empty"), `message` (the empty state's sentence) and `json`,
    the chart as charts.js reads it."""

    id: str
    key: str
    kind: str
    json: JSONText
    message: str = ""

    @property
    def data_id(self) -> str:
        return f"{self.id}-data"


def has_points(figure: Any) -> bool:
    """Whether a Plotly figure has anything to draw (an empty one would be an axis from -1
    to 1: pages show a sentence instead). A chart given as JSON text decided that itself."""
    if isinstance(figure, JSONText):
        return True
    if not isinstance(figure, dict):
        return False
    for trace in figure.get("data") or []:
        if trace.get("type") == "parcoords":
            dimensions = trace.get("dimensions") or []
            if dimensions and len(dimensions[0].get("values") or []):
                return True
        elif any(len(trace.get(key) or []) for key in ("x", "y", "z", "values")):
            return True
    return False


# --- which plotly.js bundle draws a chart ---------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """One of Plotly's official bundles (apps.core.vendor fetches them): `name`, `path` (its
    static path) and `traces`, the trace types it draws (None: every type)."""

    name: str
    path: str
    traces: frozenset[str] | None

    def draws(self, types: Iterable[str]) -> bool:
        """Whether every trace type in `types` is in this bundle."""
        return self.traces is None or self.traces.issuperset(types)


# Smallest first; each draws everything the ones before it draw (the lists are the bundles'
# own, from their READMEs; tests/e2e/test_csp.py checks them against what each registers).
BASIC = frozenset({"bar", "pie", "scatter"})
CARTESIAN = BASIC | {
    "box",
    "contour",
    "heatmap",
    "histogram",
    "histogram2d",
    "histogram2dcontour",
    "image",
    "scatterternary",
    "violin",
}
BUNDLES: tuple[Bundle, ...] = (
    Bundle("basic", "vendor/plotly-basic.min.js", BASIC),
    Bundle("cartesian", "vendor/plotly-cartesian.min.js", CARTESIAN),
    # The strict bundle draws every trace type without eval (parcoords, the WebGL ones...).
    Bundle("strict", "vendor/plotly-strict.min.js", None),
)

# A "type" key with a string value, in JSON text. A quote inside a JSON string is always
# escaped, so the text a user logged (a run's name...) never matches; and a stray match
# could only ask for a larger bundle than needed, never a smaller one.
_TYPE_KEY = re.compile(r'"type"\s*:\s*"([A-Za-z0-9_]+)"')


@functools.cache
def known_trace_types() -> frozenset[str]:
    """Every trace type Plotly has ("scatter", "parcoords", ...), from the plotly package."""
    from plotly.validator_cache import ValidatorCache

    return frozenset(ValidatorCache.get_validator("", "data").class_strs_map)


def trace_types(figure: Any) -> frozenset[str]:
    """The trace types a chart draws. `figure` is a Plotly figure {data, layout} (a trace
    without a type is a scatter, as in Plotly), a chart wrapping one ({"figure": {...}}), or
    a `JSONText` of either: there every "type" key whose value is a Plotly trace type counts
    (the other "type" keys are layout's, e.g. an axis' "date", and name no trace type), so
    that megabytes of history need not be parsed. Anything else draws nothing: empty set."""
    if isinstance(figure, JSONText):
        return frozenset(_TYPE_KEY.findall(figure)) & known_trace_types()
    if not isinstance(figure, dict):
        return frozenset()
    if isinstance(figure.get("figure"), dict):
        figure = figure["figure"]
    traces = figure.get("data") or []
    return frozenset(str(trace.get("type") or "scatter") for trace in traces if isinstance(trace, dict))


def bundle_for(*figures: Any) -> Bundle:
    """The smallest bundle (of `BUNDLES`) that draws every trace of `figures` (see
    `trace_types`); the strict bundle when a trace type is in no smaller one."""
    types: set[str] = set()
    for figure in figures:
        types |= trace_types(figure)
    return next(bundle for bundle in BUNDLES if bundle.draws(types))


@functools.lru_cache(maxsize=16)
def _sha384(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha384()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return "sha384-" + base64.b64encode(digest.digest()).decode()


def _served_file(path: str) -> Path | None:
    """The file the site serves for static `path`: the collected (hashed) copy once
    `collectstatic` has run, else the source the finders serve; None when there is none."""
    stored_name = getattr(staticfiles_storage, "stored_name", None)  # hashed-name storages
    try:
        stored = stored_name(path) if stored_name else path
    except ValueError:  # not in the manifest of a strict storage
        stored = None
    try:
        if stored and staticfiles_storage.exists(stored):
            return Path(staticfiles_storage.path(stored))
    except NotImplementedError:  # a storage without local files: the source is the same file
        pass
    found = finders.find(path)
    return Path(found) if isinstance(found, str) else None


def integrity(path: str) -> str:
    """The Subresource Integrity value ("sha384-<base64>") of static file `path` as the site
    serves it, or "" when the file is missing (a checkout before `make install`: the chart
    then says plotly.js did not load). Cached while the file is unchanged."""
    served = _served_file(path)
    if served is None:
        return ""
    try:
        stat = served.stat()
    except OSError:
        return ""
    return _sha384(str(served), stat.st_mtime_ns, stat.st_size)


def bundle_links() -> list[dict[str, str]]:
    """`BUNDLES` as charts.js reads them, smallest first: [{name, src (URL), integrity}]."""
    return [{"name": b.name, "src": static(b.path), "integrity": integrity(b.path)} for b in BUNDLES]

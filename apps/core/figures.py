"""Figures into pages: every chart's data goes into its page through Django's `json_script`
(apps.core.templatetags.charts, `{{ figure|chart_data:"id" }}`) and is drawn by the one
static chart module (static/plinth/charts.js); no inline script, no hand-made escaping.

History charts are assembled as JSON text around the stored arrays (apps.tracking.charts):
parsing hundreds of 1,000-point series only to print them again would cost seconds on a
large comparison. `JSONText` carries such text through `json_script` unchanged, which then
escapes it exactly as it escapes anything else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
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

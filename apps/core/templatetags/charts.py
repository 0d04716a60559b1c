"""`{{ figure|chart_data:"id" }}`: a chart's data for static/plinth/charts.js, and
`figure|has_points`: whether there is anything to draw (see apps.core.figures)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from apps.core import figures

register = template.Library()


@register.filter
def has_points(figure: Any) -> bool:
    return figures.has_points(figure)


@register.filter
def chart_data(value: Any, element_id: str) -> SafeString:
    return figures.chart_data(value, element_id)

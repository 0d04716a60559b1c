"""`{{ figure|chart_data:"id" }}`: a chart's data for static/plinth/charts.js, and
`figure|has_points`: whether there is anything to draw (see apps.core.figures);
`{% plotly_bundle figure as bundle %}`, `{% plotly_preload bundle %}` and
`{% plotly_bundles %}`: which plotly.js bundle draws a chart, and where the bundles are."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.core import figures

register = template.Library()

# The key, in a page render's root render context, that says a bundle is already preloaded.
_PRELOADED = "plinth.plotly_preloaded"


@register.filter
def has_points(figure: Any) -> bool:
    return figures.has_points(figure)


@register.filter
def chart_data(value: Any, element_id: str) -> SafeString:
    return figures.chart_data(value, element_id)


@register.simple_tag
def plotly_bundle(*charts: Any) -> figures.Bundle:
    """The smallest plotly.js bundle that draws every chart given (apps.core.figures)."""
    return figures.bundle_for(*charts)


@register.simple_tag(takes_context=True)
def plotly_preload(context: template.Context, bundle: figures.Bundle) -> str:
    """`<link rel="preload">` of `bundle` for the first chart of a page, so the browser
    fetches it while the page is still arriving; nothing for the page's other charts (a
    larger bundle for a chart further down loads when it is scrolled near) nor in an htmx
    fragment (its page has its plotly.js already)."""
    request = context.get("request")
    if request is not None and getattr(request, "htmx", False):
        return ""
    page = context.render_context.dicts[0]  # one per page render; includes share it
    if page.get(_PRELOADED):
        return ""
    page[_PRELOADED] = "yes"
    checksum = figures.integrity(bundle.path)
    if not checksum:
        return format_html('<link rel="preload" href="{}" as="script">', static(bundle.path))
    return format_html('<link rel="preload" href="{}" as="script" integrity="{}">', static(bundle.path), checksum)


@register.simple_tag
def plotly_bundles() -> str:
    """The plotly.js bundles as JSON for charts.js (an attribute of its script tag)."""
    return json.dumps(figures.bundle_links(), separators=(",", ":"))

"""Text that charts show, made inert for Plotly.

Plotly renders a subset of HTML in every text it draws — trace names in the legend, hover
labels, axis and chart titles, tick labels (category values included), annotations,
parallel-coordinates labels: `<a href>` becomes a live link, `<b>`, `<br>`, `<span
style>` change the page. Names and values that come from users or from MLflow (run
names, param keys and values, metric names, aliases, node names) go through `chart_text`
before they enter a figure. `html.escape` is the right tool: Plotly decodes `&amp;`,
`&lt;` and `&gt;` back into the characters when it draws, so the text reads as typed and
nothing in it is markup. Quotes are left alone: Plotly has no `&quot;` entity (it would
show literally), and a quote is not markup outside a tag."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any


def chart_text(value: Any) -> str:
    """`value` as text that Plotly draws literally (`<`, `>`, `&` escaped)."""
    return html.escape(str(value), quote=False)


def chart_texts(values: Iterable[Any]) -> list[str]:
    """`chart_text` of each value, in order."""
    return [chart_text(value) for value in values]


def chart_values(values: list[Any]) -> list[Any]:
    """Data values for an axis that may be categorical: strings escaped (Plotly draws
    category values as tick labels and in hover text), numbers and dates left as they are."""
    return [chart_text(value) if isinstance(value, str) else value for value in values]

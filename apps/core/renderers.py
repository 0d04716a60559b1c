"""The API's JSON renderer: strict JSON even when MLflow hands us NaN or infinities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import JSONRenderer

from apps.core.numbers import json_safe


class NumberSafeJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer, with every non-finite float of the answer (NaN, ±inf, MLflow's
    ±1.797e308 sentinels) written as the string "NaN", "Infinity" or "-Infinity"
    (apps.core.numbers.json_safe). DRF's own renderer is strict (STRICT_JSON) and answers
    500 "Out of range float values are not JSON compliant" to a metric that is NaN; this
    one answers the metric, and the body stays valid for strict parsers."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        return super().render(json_safe(data), accepted_media_type, renderer_context)

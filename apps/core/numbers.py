"""Metric numbers as MLflow really stores them: NaN, ±inf and MLflow's ±float-max sentinels.

MLflow accepts ``float("nan")`` and ``float("inf")`` in ``log_metric``. Its SQL store keeps NaN
as a flag (read back as NaN) but stores ±inf as ±``sys.float_info.max`` (1.7976931348623157e308),
so a run that logged ``inf`` reads back as 1.797e308 (``mlflow/store/tracking/sqlalchemy_store.py``,
``_get_metric_value_details``). Every place a metric flows through Plinth goes through this
module, so that:

* the sentinels are treated as the infinities they stand for (:func:`normalise`);
* nothing non-finite is shown as ``1.79769e+308`` (:func:`display` gives ``NaN``/``inf``/``-inf``);
* JSON stays valid JSON — strict parsers reject the ``NaN``/``Infinity`` tokens Python's
  ``json`` writes by default — by encoding non-finite floats as the strings ``"NaN"``,
  ``"Infinity"`` and ``"-Infinity"`` (:func:`json_safe`; :func:`json_restore` reads them back).
  These are the spellings MLflow's own REST API (protobuf JSON mapping) uses for the same values;
* "best" and sorting never put a non-finite value first (:func:`rank_key`, :func:`best`);
* JSON fields that hold metrics store them as strict JSON and read them back as the same floats
  (:class:`JSONSafeEncoder`, :class:`MetricsJSONDecoder`); the API's renderer
  (``apps.core.renderers``) applies :func:`json_safe` to every answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

# sys.float_info.max: what MLflow's SQL store writes for +inf (and its negative for -inf).
MLFLOW_FLOAT_MAX = 1.7976931348623157e308

# The JSON spellings of the non-finite floats (those of the protobuf JSON mapping MLflow uses).
JSON_NAN = "NaN"
JSON_INF = "Infinity"
JSON_NEG_INF = "-Infinity"
_FROM_JSON = {JSON_NAN: math.nan, JSON_INF: math.inf, JSON_NEG_INF: -math.inf}

DIRECTIONS = ("min", "max")


def normalise(value: Any) -> float:
    """The metric ``value`` as a float, with MLflow's ±1.7976931348623157e308 sentinels (and
    anything at or beyond them) mapped to ±inf. NaN stays NaN; the JSON spellings
    ``"NaN"``/``"Infinity"``/``"-Infinity"`` are read as the floats they stand for.

    Raises ``TypeError``/``ValueError`` like ``float()`` for values that are not numbers.
    """
    if isinstance(value, str) and value in _FROM_JSON:
        return _FROM_JSON[value]
    number = float(value)
    if number >= MLFLOW_FLOAT_MAX:
        return math.inf
    if number <= -MLFLOW_FLOAT_MAX:
        return -math.inf
    return number


def normalise_optional(value: Any) -> float | None:
    """:func:`normalise` that passes ``None`` ("never logged") through unchanged."""
    return None if value is None else normalise(value)


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number once normalised: False for ``None``, NaN,
    ±inf, MLflow's ±float-max sentinels and anything that is not a number."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(normalise(value))
    except (TypeError, ValueError):
        return False


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a real, finite number (see :func:`is_finite`), else
    None: how a sample read from an outside source (Prometheus answers "NaN", "+Inf") is kept
    out of sums and charts."""
    return normalise(value) if is_finite(value) else None


def display(value: Any, digits: int = 6) -> str:
    """The text a page shows for a metric: ``"NaN"``, ``"inf"``, ``"-inf"`` for the non-finite
    values (sentinels included), ``""`` for ``None`` (never logged), otherwise a compact number
    with ``digits`` significant digits (``format(value, ".6g")``: ``0.123457``, ``1e-05``)."""
    if value is None:
        return ""
    number = normalise(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return format(number, f".{digits}g")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (sentinels included), at any depth of dicts,
    lists and tuples, replaced by its JSON string ``"NaN"``/``"Infinity"``/``"-Infinity"``.

    The result serialises to strict JSON (``json.dumps(..., allow_nan=False)`` succeeds). Other
    values are returned unchanged (tuples become lists); dict keys are left as they are.
    :func:`json_restore` is its inverse for the floats.
    """
    if isinstance(value, float):
        number = normalise(value)
        if math.isnan(number):
            return JSON_NAN
        if math.isinf(number):
            return JSON_INF if number > 0 else JSON_NEG_INF
        return value
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def json_restore(value: Any) -> Any:
    """Inverse of :func:`json_safe`: the strings ``"NaN"``/``"Infinity"``/``"-Infinity"`` at any
    depth of dicts and lists become the floats NaN/±inf again; everything else is unchanged.

    Only use it on data whose strings are known to be numbers (e.g. stored metric values):
    a text field that happens to say ``"NaN"`` would be turned into a float.
    """
    if isinstance(value, str):
        return _FROM_JSON.get(value, value)
    if isinstance(value, dict):
        return {key: json_restore(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_restore(item) for item in value]
    return value


def rank_key(value: Any, direction: str) -> tuple[int, float]:
    """Sort key putting the best value first for ``direction`` (``"min"``: smallest first,
    ``"max"``: largest first), finite values always before non-finite ones:

    finite (best first) < +inf/-inf < NaN < ``None`` (never logged).

    So ``sorted(values, key=lambda v: rank_key(v, "max"))[0]`` is the best finite value, and
    ``inf`` never "wins" a max metric. Raises ``ValueError`` for an unknown direction.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if value is None or isinstance(value, bool):
        return (3, 0.0)
    try:
        number = normalise(value)
    except (TypeError, ValueError):
        return (3, 0.0)
    if math.isnan(number):
        return (2, 0.0)
    if math.isinf(number):
        return (1, 0.0)
    return (0, number if direction == "min" else -number)


def best(values: Iterable[tuple[Any, Any]], direction: str) -> tuple[Any, float] | None:
    """The ``(item, value)`` pair with the best *finite* value for ``direction`` among
    ``(item, value)`` pairs, or ``None`` when no value is finite (NaN, ±inf and ``None`` never
    win). Ties keep the first pair. The value returned is normalised."""
    found: tuple[Any, float] | None = None
    for item, value in values:
        if not is_finite(value):
            continue
        number = normalise(value)
        if found is None or rank_key(number, direction) < rank_key(found[1], direction):
            found = (item, number)
    return found


class JSONSafeEncoder(DjangoJSONEncoder):
    """Django's JSON encoder writing non-finite floats (sentinels included) as the strings of
    :func:`json_safe`, so that the text is strict JSON: PostgreSQL's jsonb and SQLite's
    JSON functions refuse the ``NaN``/``Infinity`` tokens Python writes by default. For a
    ``JSONField(encoder=JSONSafeEncoder, decoder=MetricsJSONDecoder)``."""

    def iterencode(self, o: Any, _one_shot: bool = False) -> Iterator[str]:
        return super().iterencode(json_safe(o), _one_shot)


def _restore_metrics(obj: dict[str, Any]) -> dict[str, Any]:
    metrics = obj.get("metrics")
    if isinstance(metrics, dict):
        obj["metrics"] = {key: _FROM_JSON.get(v, v) if isinstance(v, str) else v for key, v in metrics.items()}
    return obj


class MetricsJSONDecoder(json.JSONDecoder):
    """Reads back what :class:`JSONSafeEncoder` wrote: in every object's ``"metrics"``
    mapping (and only there, so a run named "NaN" stays a name), the strings
    ``"NaN"``/``"Infinity"``/``"-Infinity"`` become the floats NaN/±inf again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("object_hook", _restore_metrics)
        super().__init__(*args, **kwargs)

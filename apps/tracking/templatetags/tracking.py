"""Filters of the run pages: epoch milliseconds, durations, metric values."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.template.defaultfilters import floatformat

from apps.core.numbers import display, is_finite, normalise

register = template.Library()


@register.filter
def from_ms(value: int | None) -> datetime | None:
    """MLflow's epoch milliseconds as an aware datetime (for |date)."""
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


@register.filter
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def hours_duration(hours: float | None) -> str:
    """`duration` of a time given in hours (pruning's run time saved): "42 s", "3 min 5 s"."""
    return duration(None if hours is None else hours * 3600)


@register.filter
def gpu_hours(hours: float | None) -> str:
    """GPU time in GPU-hours, GPU-minutes under a tenth of an hour, or a duration "of GPU
    time" under a tenth of a minute (a saving never reads 0.0); "—" for None."""
    if hours is None:
        return "—"
    if hours * 60 < 0.1:
        return f"{duration(hours * 3600)} of GPU time"
    if hours < 0.1:
        return f"{hours * 60:.1f} GPU-minutes"
    return f"{hours:.1f} GPU-hours"


@register.filter
def metric(value: float | None) -> str:
    """Six significant digits: enough to tell runs apart, short enough for a table. A
    logged NaN/±inf (MLflow's ±1.797e308 sentinels included) reads "NaN"/"inf"/"-inf"
    (apps.core.numbers.display); "—" is a value never logged."""
    return "—" if value is None else display(value)


@register.filter
def metric_fixed(value: float | None, decimals: int = 4) -> str:
    """`value` with `decimals` places, like `floatformat` (0.9500), but a logged NaN/±inf
    (MLflow's ±1.797e308 sentinels included) reads "NaN"/"inf"/"-inf" instead of "nan" or
    1.7976931348623157e+308, and "" is a value never logged (pair it with `|default:"—"`)."""
    try:
        number = normalise(value)
    except (TypeError, ValueError):
        return ""
    return str(floatformat(number, decimals)) if is_finite(number) else display(number)

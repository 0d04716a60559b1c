"""Filters of the run pages: epoch milliseconds, durations, metric values."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template

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
def metric(value: float | None) -> str:
    """Six significant digits: enough to tell runs apart, short enough for a table."""
    return "—" if value is None else f"{value:.6g}"

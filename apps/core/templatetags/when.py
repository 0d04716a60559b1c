"""`{{ value|when }}`: the one way pages show a point in time — in the viewer's time zone
(apps.core.timezones), always labelled with the zone's abbreviation, inside a `<time>`
element whose `datetime` is ISO 8601 with the offset."""

from __future__ import annotations

from datetime import UTC, date, datetime

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

DEFAULT = "Y-m-d H:i"
_TIME_CHARS = set("aAbBfgGhHiPsu")


def _local_text(value: datetime | date, fmt: str) -> tuple[str, str]:
    """(ISO 8601 with offset, the shown text) of `value` in the active zone."""
    if not isinstance(value, datetime):
        return value.isoformat(), date_format(value, fmt)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    local = timezone.localtime(value)
    shown = date_format(local, fmt)
    if set(fmt) & _TIME_CHARS:
        shown = f"{shown} {date_format(local, 'T')}"
    return local.isoformat(), shown


@register.filter
def when_text(value: datetime | date | None, fmt: str = DEFAULT) -> str:
    """As `when`, as plain text (for attributes such as `title`): "2026-11-29 14:03 CET"."""
    if value in (None, ""):
        return ""
    return _local_text(value, fmt)[1]  # type: ignore[arg-type]


@register.filter(is_safe=True)
def when(value: datetime | date | None, fmt: str = DEFAULT) -> SafeString:
    """`value` (an aware datetime; a naive one is taken as the server's TIME_ZONE) in the
    active zone, as Django's date format `fmt` (default "Y-m-d H:i") followed by the zone
    abbreviation ("CET", "UTC", "+0530" where the zone has none) when `fmt` shows a time.
    None or "" gives "" (so `|default:"never"` still applies). An ISO 8601 string (as JSON
    fields store times) is read as that datetime; any other string is shown as it is."""
    if value in (None, ""):
        return mark_safe("")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return format_html("{}", value)
    iso, shown = _local_text(value, fmt)  # type: ignore[arg-type]
    if not isinstance(value, datetime):
        return format_html('<time datetime="{}">{}</time>', iso, shown)
    utc = datetime.fromisoformat(iso).astimezone(UTC)
    return format_html('<time datetime="{}" title="{}">{}</time>', iso, utc.strftime("%Y-%m-%d %H:%M:%S UTC"), shown)

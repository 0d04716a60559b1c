"""The portal's words for states and changes, so every page says the same thing:

- `{{ run.status|run_status }}`: an MLflow run status in the words launches use
  ("Cancelled", never MLflow's "killed");
- `{{ launch.exit_code|exit_status:launch.status }}`: an exit code, with a signal by name
  ("cancelled (SIGTERM)", never "exit code -15");
- `{{ event|change_diff }}`: an audit event's before → after as a readable list of the
  fields that changed, never Python dict text.
"""

from __future__ import annotations

import json
import signal
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

# MLflow's run statuses in the launch states' words (apps.launches.models.Status labels).
RUN_STATUS_WORDS = {
    "RUNNING": "Running",
    "SCHEDULED": "Pending",
    "FINISHED": "Succeeded",
    "FAILED": "Failed",
    "KILLED": "Cancelled",
}


@register.filter
def run_status(value: str | None) -> str:
    """An MLflow run status as the portal names the same state."""
    text = str(value or "")
    return RUN_STATUS_WORDS.get(text.upper(), text.capitalize())


def signal_name(number: int) -> str:
    """SIGTERM for 15; the number itself where the platform has no such signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@register.filter
def exit_status(code: int | None, status: str = "") -> str:
    """How a process ended: "exit code 2", or for a negative code (the process was ended
    by a signal) the signal by name: "cancelled (SIGTERM)" when the launch was cancelled,
    "ended by SIGKILL" otherwise."""
    if code is None:
        return ""
    if code >= 0:
        return f"exit code {code}"
    name = signal_name(-code)
    if status == "cancelled":
        return f"cancelled ({name})"
    return f"ended by {name}"


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def change_rows(before: Any, after: Any) -> list[tuple[str, str, str]]:
    """(field, before, after) for each field that differs; one row with an empty field
    name when the values are not both objects."""
    if isinstance(before, dict) or isinstance(after, dict):
        old = before if isinstance(before, dict) else {}
        new = after if isinstance(after, dict) else {}
        if (before is not None and not isinstance(before, dict)) or (after is not None and not isinstance(after, dict)):
            return [("", _show(before), _show(after))]
        keys = list(old) + [k for k in new if k not in old]
        return [
            (str(k), _show(old.get(k)) if k in old else "", _show(new.get(k)) if k in new else "")
            for k in keys
            if k not in old or k not in new or old[k] != new[k]
        ]
    if before == after:
        return []
    return [("", _show(before) if before is not None else "", _show(after) if after is not None else "")]


@register.filter
def change_diff(event: Any) -> SafeString:
    """An audit event's change as a list: "field: before → after" per changed field, with
    only the side that exists for something created or removed."""
    rows = change_rows(getattr(event, "before", None), getattr(event, "after", None))
    if not rows:
        return format_html("")
    items = format_html_join(
        "",
        "<li>{}{}</li>",
        (
            (
                format_html('<span class="field">{}</span>: ', field) if field else "",
                _arrow(old, new),
            )
            for field, old, new in rows
        ),
    )
    return format_html('<ul class="diff">{}</ul>', items)


def _arrow(old: str, new: str) -> SafeString:
    if old and new:
        return format_html('<del class="before">{}</del> → <ins class="after">{}</ins>', old, new)
    if new:
        return format_html('<ins class="after">{}</ins>', new)
    return format_html('<del class="before">{}</del> <span class="muted">(removed)</span>', old)

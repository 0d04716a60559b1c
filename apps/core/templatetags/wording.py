"""The portal's words for states and changes, so every page says the same thing:

- `{{ run.status|run_status }}`: an MLflow run status in the words launches use
  ("Cancelled", never MLflow's "killed");
- `{{ launch.exit_code|exit_status:launch.status }}`: an exit code, with a signal by name
  ("cancelled (SIGTERM)", never "exit code -15"; the plain function is
  apps.core.wording.exit_status);
- `{{ event|change_diff }}`: an audit event's before → after as a readable list of the
  fields that changed, never Python dict text.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.core.wording import exit_status

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


# How a process ended: a plain function (backends word their reasons with it too), offered
# to templates as a filter.
register.filter("exit_status", exit_status)


# A change is bounded on the page: a value is cut at this many characters, a change at this
# many fields (the API and the CSV export keep the whole JSON).
MAX_VALUE_CHARS = 160
MAX_ROWS = 40
EMPTY = "—"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _inline(value: Any) -> str:
    """A value as words on one line, without brackets, braces or quotes: a list as its items
    comma-separated, an object as "key value" pairs separated by semicolons, nothing as "—"."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict):
        if not value:
            return "none"
        return "; ".join(f"{key} {_inline(item)}" for key, item in _flatten(value).items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_inline(item) for item in value) if value else "none"
    return str(value)


def _show(value: Any) -> str:
    """A leaf value as the Change column shows it: words, at most MAX_VALUE_CHARS characters."""
    return _cut(_inline(value))


def _flatten(value: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    """{"parameters": {"lr": 0.2}} as {"parameters.lr": 0.2}: nested objects become dotted
    keys, down to the leaves; an empty object stays a leaf (shown as "none")."""
    leaves: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            leaves.update(_flatten(item, f"{name}."))
        else:
            leaves[name] = item
    return leaves


def _filled(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether `key` is an empty object on one side whose fields the other side lists
    (pod_defaults: {} → pod_defaults.node_selector: ...): the fields say it all."""
    for side, other in ((old, new), (new, old)):
        if side.get(key) == {} and key not in other and any(k.startswith(f"{key}.") for k in other):
            return True
    return False


# The field of change_rows' last row when it was cut short (its "after" says how many more).
MORE_FIELDS = "…"


def change_rows(before: Any, after: Any) -> list[tuple[str, str, str]]:
    """(field, before, after) for each leaf that differs: nested objects as dotted fields
    ("parameters.lr"), lists as comma-separated values, empty values as "—" or "none", each
    value cut at MAX_VALUE_CHARS with "…". A side that does not exist (something created or
    removed) is "". One row with an empty field name when the values are not both objects;
    at most MAX_ROWS rows, the last one (field MORE_FIELDS) saying how many more changed."""
    if isinstance(before, dict) or isinstance(after, dict):
        if (before is not None and not isinstance(before, dict)) or (after is not None and not isinstance(after, dict)):
            return [("", _show(before), _show(after))]
        old = _flatten(before or {})
        new = _flatten(after or {})
        keys = list(old) + [k for k in new if k not in old]
        rows = [
            (k, _show(old[k]) if k in old else "", _show(new[k]) if k in new else "")
            for k in keys
            if (k not in old or k not in new or old[k] != new[k]) and not _filled(k, old, new)
        ]
        if len(rows) > MAX_ROWS:
            more = len(rows) - (MAX_ROWS - 1)
            rows = [*rows[: MAX_ROWS - 1], (MORE_FIELDS, "", f"… and {more} more fields")]
        return rows
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
                format_html('<span class="field">{}</span>: ', field) if field and field != MORE_FIELDS else "",
                format_html('<span class="muted">{}</span>', new) if field == MORE_FIELDS else _arrow(old, new),
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

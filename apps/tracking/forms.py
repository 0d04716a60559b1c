"""Query strings of the runs table (page and API) and the artifact path rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.http import QueryDict

from apps.core.errors import InvalidInput
from apps.tracking.runs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

MAX_FILTER = 4000


def _listed(params: QueryDict, name: str) -> list[str]:
    items: list[str] = []
    for value in params.getlist(name):
        for part in value.split(","):
            if part.strip() and part.strip() not in items:
                items.append(part.strip())
    return items


@dataclass(frozen=True)
class RunQuery:
    """What a runs table asks MLflow: a filter and an order in MLflow's syntax (validated
    by MLflow: a bad one is its 400 with its message), a page, and the columns to show."""

    filter: str
    order_by: list[str]
    page_token: str
    max_results: int
    params: list[str] | None  # None: the defaults (the first few found on the page)
    metrics: list[str] | None


def parse_run_query(params: QueryDict, *, default_size: int = DEFAULT_PAGE_SIZE) -> RunQuery:
    text = params.get("filter", "").strip()
    if len(text) > MAX_FILTER:
        raise InvalidInput.field("filter", f"The filter is longer than {MAX_FILTER} characters.")
    if "\x00" in text:
        raise InvalidInput.field("filter", "The filter contains a NUL character.")
    raw_size = params.get("max_results", "") or str(default_size)
    try:
        size = int(raw_size)
    except ValueError:
        raise InvalidInput.field("max_results", "max_results must be a whole number.") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidInput.field("max_results", f"max_results must be between 1 and {MAX_PAGE_SIZE}.")
    order_by = [o.strip() for o in params.getlist("order_by") if o.strip()]
    return RunQuery(
        filter=text,
        order_by=order_by,
        page_token=params.get("page_token", "").strip(),
        max_results=size,
        params=_listed(params, "params") if "params" in params else None,
        metrics=_listed(params, "metrics") if "metrics" in params else None,
    )


_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")


def clean_artifact_path(raw: str, *, allow_root: bool = False) -> str:
    """An artifact path relative to the run's artifact root, or a 400: no "..", "." or
    empty segments, no backslashes, no absolute paths or drive letters, no control
    characters, and nothing still percent-encoded once Django has decoded the URL (a
    double-encoded "%252e%252e" arrives as "%2e%2e": refused, never decoded again)."""
    path = raw or ""
    if not path and allow_root:
        return ""
    refuse = InvalidInput.field("path", "That is not an artifact path of this run.")
    if not path or len(path) > 1000:
        raise refuse
    if "\\" in path or path.startswith("/") or _DRIVE.match(path) or _ENCODED.search(path):
        raise refuse
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path) or "#" in path:
        raise refuse
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise refuse
    return path

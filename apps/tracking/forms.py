"""Query strings of the runs table (page and API), the compare page's analysis choices and
the artifact path rule."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.http import QueryDict

from apps.core.api import int_param
from apps.core.errors import InvalidInput
from apps.tracking.runs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

MAX_FILTER = 4000
MAX_CLAUSES = 20
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_INTEGER = re.compile(r"(?<![\w.])\d+(?![\w.])")
# MLflow's run-search page tokens are base64 of {"offset": N} (its SearchUtils.create_page_token).
MAX_PAGE_TOKEN = 200
# No experiment holds 2**31 runs; a larger offset only overflows MLflow's SQL OFFSET (its 500).
MAX_PAGE_OFFSET = 2**31 - 1


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
    check_filter_limits(text)
    size = int_param(params, "max_results", default_size, minimum=1, maximum=MAX_PAGE_SIZE)
    order_by = [o.strip() for o in params.getlist("order_by") if o.strip()]
    return RunQuery(
        filter=text,
        order_by=order_by,
        page_token=clean_page_token(params.get("page_token", "")),
        max_results=size,
        params=_listed(params, "params") if "params" in params else None,
        metrics=_listed(params, "metrics") if "metrics" in params else None,
    )


class AnalysisQuery(forms.Form):
    """The compare page's analysis choices, each one of the compared runs' keys or empty
    for its default: `pc`, the metric of the parallel coordinates; `sx` and `sy`, the
    param and the metric of the scatter. Any other value is an error on its field (the
    view answers 400 naming it), never a silent fallback.

    `metrics` and `params` are the comparison's metric and param keys (lists of str).
    """

    pc = forms.ChoiceField(
        required=False,
        help_text="Parallel coordinates: a metric of the compared runs.",
        error_messages={"invalid_choice": "%(value)r is not a metric of these runs."},
    )
    sx = forms.ChoiceField(
        required=False,
        help_text="Scatter x axis: a param of the compared runs.",
        error_messages={"invalid_choice": "%(value)r is not a param of these runs."},
    )
    sy = forms.ChoiceField(
        required=False,
        help_text="Scatter y axis: a metric of the compared runs.",
        error_messages={"invalid_choice": "%(value)r is not a metric of these runs."},
    )

    def __init__(self, data: QueryDict, *, metrics: Sequence[str], params: Sequence[str]) -> None:
        super().__init__(data)
        self.metrics = list(metrics)
        for name, keys in (("pc", metrics), ("sx", params), ("sy", metrics)):
            field = cast(forms.ChoiceField, self.fields[name])
            field.choices = [("", "default"), *((key, key) for key in keys)]

    def chosen(self, differing: Sequence[str]) -> tuple[str, str, str]:
        """`(pc, sx, sy)` of a valid form, defaults filled in: the first metric, the first of
        `differing` (the params that differ between the runs; all params when none do), and
        `pc`. "" where the runs have no such key."""
        data = self.cleaned_data
        metric = data["pc"] or (self.metrics[0] if self.metrics else "")
        x = data["sx"] or (differing[0] if differing else "")
        return metric, x, data["sy"] or metric


def check_filter_limits(text: str) -> None:
    """Refuse (400 on `filter`) the MLflow filters that MLflow answers with a 500 instead of
    its own 400, so they are not mistaken for MLflow being down: more than MAX_CLAUSES
    conditions (each can be a join; SQLite stops at 64 tables) and a whole number past a
    signed 64-bit integer (e.g. `attributes.start_time > 99999999999999999999`). Quoted
    text is not looked into; the rest of the syntax is MLflow's to judge."""
    bare = _QUOTED.sub("''", text)
    clauses = len(_AND.split(bare))
    if clauses > MAX_CLAUSES:
        raise InvalidInput.field("filter", f"The filter has {clauses} conditions; at most {MAX_CLAUSES}.")
    for number in _INTEGER.findall(bare):
        if int(number) > 2**63 - 1:
            raise InvalidInput.field("filter", f"{number[:30]} is larger than any value MLflow stores.")


def clean_page_token(raw: str) -> str:
    """A page token as MLflow issues them for runs/search, or a 400 on `page_token`.

    MLflow's tokens are base64 of the JSON object {"offset": N}, N a whole number >= 1
    (mlflow.utils.search_utils.SearchUtils.create_page_token). MLflow itself answers 500
    to a token that decodes to another shape (e.g. "W10=", a list) and to an offset past
    its SQL integer range, so both are refused here: anything but one key "offset" with
    1 <= N <= MAX_PAGE_OFFSET (2**31 - 1), or Plinth's own token for lists ordered by a
    metric ({"phase": 0..3, "offset": N, "base": B}, apps.tracking.runs.phased_token).
    "" (the first page) stays "".
    """
    token = (raw or "").strip()
    if not token:
        return ""
    refuse = InvalidInput.field("page_token", "That is not a page token this list handed out; start from page one.")
    if len(token) > MAX_PAGE_TOKEN:
        raise refuse
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError):
        raise refuse from None
    if not isinstance(decoded, dict):
        raise refuse

    def whole(value: Any, low: int, high: int) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high

    if set(decoded) == {"offset"} and whole(decoded["offset"], 1, MAX_PAGE_OFFSET):
        return token
    # Plinth's own token for lists ordered by a metric (apps.tracking.runs.phased_token).
    if (
        set(decoded) == {"phase", "offset", "base"}
        and whole(decoded["phase"], 0, 3)
        and whole(decoded["offset"], 0, MAX_PAGE_OFFSET)
        and whole(decoded["base"], 0, MAX_PAGE_OFFSET)
        and decoded["base"] + decoded["offset"] <= MAX_PAGE_OFFSET
    ):
        return token
    raise refuse


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

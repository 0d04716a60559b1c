"""The GPU fleet's filters (the fleet page and GET /api/v1/gpus/) and the usage report's query
(the usage page, its CSV and GET /api/v1/gpus/usage/)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, cast

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from apps.core.filters import EARLIEST_DAY, LATEST_DAY, FilterSet, YesNoFilter, local_midnight
from apps.gpus.models import Gpu, IdleFinding
from apps.gpus.usage import GROUPS, Period

# The GPU's product name (NVIDIA's `nvidia.com/gpu.product`), whatever the column is called.
_PRODUCT = "product" if any(f.name == "product" for f in Gpu._meta.get_fields()) else "model"


class GpuFilter(FilterSet):
    """GPUs: ?node= ?model= (the product name, e.g. NVIDIA-H100-80GB-HBM3) ?allocated=true|false."""

    node = django_filters.CharFilter(max_length=253, help_text="A node's name.")
    model = django_filters.CharFilter(method="of_product", max_length=120, label="Product", help_text="A GPU product.")
    allocated = YesNoFilter(help_text="Held by a launch or pod (true) or free (false).")

    class Meta:
        model = Gpu
        fields = ["node", "model", "allocated"]

    def of_product(self, qs: QuerySet[Gpu], name: str, value: str) -> QuerySet[Gpu]:
        return qs.filter(**{_PRODUCT: value}) if value else qs


class IdleFilter(FilterSet):
    """Idle GPUs: those idle now (the default), or ?history=1 adding the last 7 days' resolved
    and reclaimed findings (the base queryset holds both: apps.gpus.selectors.idle_findings)."""

    history = django_filters.ChoiceFilter(
        choices=[("1", "with the last 7 days")], empty_label="idle now", method="with_history", label="Show"
    )

    class Meta:
        model = IdleFinding
        fields = ["history"]

    def with_history(self, qs: QuerySet[IdleFinding], name: str, value: str) -> QuerySet[IdleFinding]:
        return qs  # filter_queryset narrows when it is not asked for

    def filter_queryset(self, queryset: QuerySet[IdleFinding]) -> QuerySet[IdleFinding]:
        found = super().filter_queryset(queryset)
        if self.form.cleaned_data.get("history") == "1":
            return found
        return found.active().order_by("idle_since", "id")  # type: ignore[attr-defined,no-any-return]


# Moments a period can start or end at: far enough from datetime's limits that the day after,
# or 30 days before, still exists in every time zone.
_EARLIEST, _LATEST = EARLIEST_DAY, LATEST_DAY
_ISO = "Use an ISO date (2025-01-31) or date-time (2025-01-31T12:00:00Z)."


class MomentField(forms.CharField):
    """An ISO date (2025-01-31) or, unless `dates_only`, an ISO date-time; cleans to a `date`
    or an aware `datetime`."""

    def __init__(self, *, dates_only: bool = False, **kwargs: Any) -> None:
        self.dates_only = dates_only
        kwargs.setdefault("max_length", 40)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> date | datetime | None:
        text = super().clean(value)
        if not text:
            return None
        try:
            moment = None if self.dates_only else parse_datetime(text)
            found: date | datetime | None = moment or parse_date(text)
        except ValueError:
            found = None
        if found is None:
            raise ValidationError("Use an ISO date (2025-01-31)." if self.dates_only else _ISO, code="invalid")
        day = found.date() if isinstance(found, datetime) else found
        if not _EARLIEST <= day <= _LATEST:
            raise ValidationError(f"Pick a day between {_EARLIEST} and {_LATEST}.", code="invalid")
        if isinstance(found, datetime) and not timezone.is_aware(found):
            found = timezone.make_aware(found)
        return found


class UsageQuery(forms.Form):
    """The GPU usage report's one query, read alike by GET /api/v1/gpus/usage/, the usage
    page and its CSV export: ?group_by=team|project ?start= ?end= ?team= (one team's slug).
    Cleans to `group_by`, `team` and `period` (a Period); a bad value is an error on its
    field (400: the API's `{field: [messages]}`, the page's form errors).

    Moments (the API, the default): `start`/`end` are ISO dates (midnight, local time) or
    date-times, the end exclusive; default the 30 days before now; grouped by team.
    Whole days (`whole_days=True`: the page and its CSV): `start`/`end` are ISO dates, the
    end day included; default the last 30 days, at most 400; grouped by project."""

    group_by = forms.ChoiceField(choices=[(g, g) for g in GROUPS], required=False, help_text="team or project")
    start = MomentField(
        required=False,
        help_text="ISO date or date-time (default: 30 days before the end)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    end = MomentField(
        required=False,
        help_text="ISO date or date-time, exclusive (default: now)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    team = forms.SlugField(required=False, max_length=100, help_text="one team's slug")

    MAX_DAYS = 400

    def __init__(self, data: Any = None, *, whole_days: bool = False) -> None:
        super().__init__(data)
        self.whole_days = whole_days
        for name in ("start", "end"):
            cast(MomentField, self.fields[name]).dates_only = whole_days

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["group_by"] = data.get("group_by") or ("project" if self.whole_days else "team")
        if not self.errors:
            period = self._days(data) if self.whole_days else self._moments(data)
            if period is not None:
                data["period"] = period
        return data

    def _moments(self, data: dict[str, Any]) -> Period | None:
        now = timezone.now()
        end = self._moment(data.get("end")) or now
        start = self._moment(data.get("start")) or end - timedelta(days=30)
        if start >= end:
            self.add_error("start", "The period must start before it ends.")
            return None
        return Period.of(start, end, now)

    def _days(self, data: dict[str, Any]) -> Period | None:
        end = data.get("end") or timezone.localdate()
        start = data.get("start") or end - timedelta(days=29)
        data["start"], data["end"] = start, end
        if start > end:
            self.add_error("start", "The period must start before it ends.")
            return None
        if (end - start).days > self.MAX_DAYS:
            self.add_error("start", f"Report on at most {self.MAX_DAYS} days at a time.")
            return None
        return Period.of(local_midnight(start), local_midnight(end + timedelta(days=1)))

    @staticmethod
    def _moment(value: date | datetime | None) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return local_midnight(value)

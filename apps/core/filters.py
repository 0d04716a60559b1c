"""The one way a list reads its query parameters: a django-filter `FilterSet` per list (in
`apps/<app>/filters.py`), used by the page and the API alike, so a value validates the same
way on both and the OpenAPI schema lists exactly the parameters the list reads.

- API viewsets set `filterset_class`; DRF's `DjangoFilterBackend` (settings) answers a bad
  value with 400 `{field: [messages]}` and drf-spectacular documents the parameters.
- An `APIView` that is no generic list (the body is not a page of one queryset) binds the
  FilterSet itself with `filter_or_400` and documents it with `filter_parameters`; a report
  that is no queryset at all (GPU usage) reads its query with one plain Form, documented with
  `form_parameters`.
- Pages use `FilteredListMixin`: the page's filter form is the FilterSet's `.form`; an
  invalid value shows the form's error with a 400 and lists nothing (never a 500, never
  silently ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, time
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from django.utils.choices import BaseChoiceIterator
from drf_spectacular.drainage import get_override
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework.exceptions import ValidationError as ApiValidationError

from apps.core.api import MAX_ID, int_schema


class LazyChoices(BaseChoiceIterator):
    """A select's choices read from the database once, when the form is drawn (an API
    request, which never draws it, reads nothing; a callable would be read each time the
    widget looks at its choices)."""

    def __init__(self, load: Callable[[], Iterable[tuple[Any, Any]]]) -> None:
        self.load = load
        self.loaded: list[tuple[Any, Any]] | None = None

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.loaded is None:
            self.loaded = list(self.load())
        return iter(self.loaded)


def lazy_select(load: Callable[[], Iterable[Any]], empty: str = "all") -> forms.Select:
    """A select of `load()`'s values (each its own label) after an empty choice."""
    return forms.Select(choices=LazyChoices(lambda: [("", empty), *((v, v) for v in load())]))


class FilterSet(django_filters.FilterSet):
    """Base of every list's filters: `user` is the caller (filters that name objects resolve
    them with the caller's access: 404 when invisible, as the object's own URL answers)."""

    @property
    def user(self) -> Any:
        return getattr(self.request, "user", None)

    @property
    def active(self) -> bool:
        """Whether any filter narrows the list (for "no X matches these filters")."""
        return self.is_bound and any(v not in (None, "", [], False) for v in self.form.cleaned_data.values())


def errors_of(form: forms.Form) -> dict[str, list[str]]:
    """A form's errors as the API's 400 body carries them: {field: [messages]}."""
    return {field: [str(message) for message in messages] for field, messages in form.errors.items()}


def errors_text(form: forms.Form) -> str:
    """A form's (or a FilterSet's form's) errors as one sentence for the 400 page:
    "field: message message; other: message"."""
    return "; ".join(f"{field}: {' '.join(texts)}" for field, texts in errors_of(form).items())


def filter_or_400(filterset_class: type[FilterSet], request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
    """`queryset` narrowed by the request's query parameters; a bad value raises DRF's 400
    `{field: [messages]}`, as `DjangoFilterBackend` does for generic views."""
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise ApiValidationError(errors_of(filterset.form))
    return filterset.qs


_BASIC: list[tuple[type[django_filters.Filter], Any]] = [
    (django_filters.BooleanFilter, OpenApiTypes.BOOL),
    (django_filters.DateFilter, OpenApiTypes.DATE),
    (django_filters.IsoDateTimeFilter, OpenApiTypes.DATETIME),
    (django_filters.DateTimeFilter, OpenApiTypes.DATETIME),
    (django_filters.NumberFilter, OpenApiTypes.NUMBER),
]


def filter_parameters(filterset_class: type[FilterSet]) -> list[OpenApiParameter]:
    """The OpenAPI query parameters of a FilterSet, for `@extend_schema(parameters=...)` on an
    `APIView` (generic views get them from drf-spectacular's django-filter extension)."""
    parameters = []
    for name, flt in filterset_class.base_filters.items():
        schema: Any = OpenApiTypes.STR
        override = get_override(flt, "field")
        if override is not None:
            schema = override
        else:
            schema = next((kind for cls, kind in _BASIC if isinstance(flt, cls)), OpenApiTypes.STR)
        choices = flt.extra.get("choices")
        enum = [value for value, _ in choices] if choices and not callable(choices) else None
        description = str(flt.extra.get("help_text") or flt.label or "")
        parameters.append(OpenApiParameter(name, schema, description=description, enum=enum))
    return parameters


def described(flt: django_filters.Filter, schema: dict[str, Any]) -> None:
    """Documents `flt` with `schema` (and its help text) in the OpenAPI schema."""
    if flt.extra.get("help_text"):
        said = [str(flt.extra["help_text"]), schema.get("description", "")]
        schema = {**schema, "description": " ".join(part for part in said if part)}
    extend_schema_field(schema)(flt)


def form_parameters(form_class: type[forms.Form]) -> list[OpenApiParameter]:
    """The OpenAPI query parameters of a plain Form that an endpoint reads its query with
    (for a report that is no queryset, so no FilterSet): strings, choices as an enum."""
    parameters = []
    for name, field in form_class.base_fields.items():
        choices = getattr(field, "choices", None)
        enum = [value for value, _ in choices if value != ""] if choices else None
        parameters.append(OpenApiParameter(name, OpenApiTypes.STR, description=str(field.help_text), enum=enum))
    return parameters


class IdFilter(django_filters.Filter):
    """A row's id: a whole number 1..2**63-1 (a larger one cannot exist and would reach the
    database as an overflow)."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)
        described(self, int_schema(1, MAX_ID))


class YesNoFilter(django_filters.Filter):
    """`?name=true|false` (empty: both). Anything else is an error, where django-filter's
    BooleanFilter would read it as "no filter"."""

    field_class = forms.ChoiceField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("choices", [("", "all"), ("true", "yes"), ("false", "no")])
        super().__init__(*args, **kwargs)
        described(self, {"type": "boolean"})

    def filter(self, qs: Any, value: Any) -> Any:
        return qs.filter(**{self.field_name: value == "true"}) if value in ("true", "false") else qs


class CommaChoiceField(forms.CharField):
    """One or more comma-separated values out of `choices` (plus named groups such as
    "live" that stand for several); cleans to the list of plain values, [] when empty."""

    def __init__(self, *, choices: Iterable[tuple[str, str]], groups: Mapping[str, Iterable[str]], **kwargs: Any):
        self.choices = [value for value, _ in choices]
        self.groups = {name: list(values) for name, values in groups.items()}
        super().__init__(**kwargs)

    def clean(self, value: Any) -> list[str]:
        text = super().clean(value) or ""
        wanted: list[str] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if part in self.groups:
                wanted.extend(self.groups[part])
            elif part in self.choices:
                wanted.append(part)
            else:
                raise ValidationError(
                    "%(value)s is not one of %(allowed)s (several: comma-separated).",
                    code="invalid",
                    params={"value": repr(part), "allowed": ", ".join([*self.groups, *self.choices])},
                )
        return wanted


class CommaChoiceFilter(django_filters.Filter):
    """`?status=running,failed` (or a group such as `live`): the rows with any of them. On a
    page it is a select of the single values and the groups."""

    field_class = CommaChoiceField

    def __init__(
        self,
        *args: Any,
        choices: Iterable[tuple[str, str]],
        groups: Mapping[str, Iterable[str]] | None = None,
        **kw: Any,
    ) -> None:
        choices, groups = list(choices), dict(groups or {})
        kw.setdefault("lookup_expr", "in")
        kw.setdefault(
            "widget",
            forms.Select(
                choices=[("", "all"), *((g, g) for g in groups), *((str(v), str(label)) for v, label in choices)]
            ),
        )
        super().__init__(*args, choices=choices, groups=groups, **kw)
        described(self, comma_choice_schema(choices, groups))

    def filter(self, qs: Any, value: Any) -> Any:
        return qs.filter(**{f"{self.field_name}__in": value}) if value else qs


def comma_choice_schema(choices: Iterable[tuple[str, str]], groups: Iterable[str] = ()) -> dict[str, Any]:
    """The schema of a CommaChoiceFilter's parameter: a string of comma-separated values."""
    values = ", ".join([*groups, *(str(v) for v, _ in choices)])
    return {"type": "string", "description": f"One or more of {values}, comma-separated."}


class FilteredListMixin:
    """A list page narrowed by `filterset_class`: `self.filtered(queryset)` applies it
    (nothing when a value is invalid) and the FilterSet is the context's `filter`; an
    invalid value answers 400 with the form's errors on the page."""

    filterset_class: type[FilterSet]
    filterset: FilterSet | None = None

    def filtered(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        request = self.request  # type: ignore[attr-defined]
        # Always bound (no parameters: every filter empty), so a FilterSet's defaults apply.
        self.filterset = self.filterset_class(request.GET, queryset=queryset, request=request)
        return self.filterset.qs if self.filterset.is_valid() else queryset.none()

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        if self.filterset is not None:
            context.setdefault("filter", self.filterset)
            if not self.filterset.is_valid():
                kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)  # type: ignore[misc,no-any-return]


# Days a period can start or end on: far enough from datetime's limits that a local midnight
# and the day after it exist in every time zone.
EARLIEST_DAY, LATEST_DAY = date(1900, 1, 1), date(9998, 12, 31)


def local_midnight(day: date) -> datetime:
    """The start of `day` in the current time zone, aware."""
    return timezone.make_aware(datetime.combine(day, time.min))

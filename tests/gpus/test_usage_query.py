"""The usage report's one query (apps.gpus.filters.UsageQuery), read by the API in moments and
by the page and its CSV export in whole days: the same fields, the same refusals, and the
same period for the same days (the page's end day included, the API's end exclusive)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.http import QueryDict
from django.utils import timezone

from apps.accounts.models import User
from apps.core.filters import errors_of, local_midnight
from apps.gpus.filters import UsageQuery
from apps.projects.models import Project
from tests.conftest import api_for, client_for

JAN_1, FEB_1 = local_midnight(date(2025, 1, 1)), local_midnight(date(2025, 2, 1))


def cleaned(query: str, *, whole_days: bool = False) -> dict[str, Any]:
    form = UsageQuery(QueryDict(query), whole_days=whole_days)
    assert form.is_valid(), form.errors
    return form.cleaned_data


def errors(query: str, *, whole_days: bool = False) -> dict[str, list[str]]:
    form = UsageQuery(QueryDict(query), whole_days=whole_days)
    assert not form.is_valid()
    return errors_of(form)


def test_the_same_days_are_the_same_period_in_both_readings() -> None:
    api = cleaned("start=2025-01-01&end=2025-02-01")
    page = cleaned("start=2025-01-01&end=2025-01-31", whole_days=True)
    assert (api["period"].start, api["period"].end) == (JAN_1, FEB_1)
    assert page["period"] == api["period"]


def test_each_reading_has_its_defaults() -> None:
    api = cleaned("")
    assert api["group_by"] == "team"
    assert api["period"].end - api["period"].start >= timedelta(days=30)
    page = cleaned("", whole_days=True)
    assert page["group_by"] == "project"
    today = timezone.localdate()
    assert (page["start"], page["end"]) == (today - timedelta(days=29), today)
    assert page["period"].start == local_midnight(today - timedelta(days=29))
    assert cleaned("group_by=project")["group_by"] == cleaned("group_by=project", whole_days=True)["group_by"]


def test_the_api_reads_date_times_and_the_page_whole_days_only() -> None:
    api = cleaned("start=2025-01-01T00:00:00Z&end=2025-01-02T12:00:00Z")
    assert api["period"].end - api["period"].start == timedelta(hours=36)
    assert errors("start=2025-01-01T00:00:00Z", whole_days=True) == {"start": ["Use an ISO date (2025-01-31)."]}


def test_only_the_page_caps_the_period_and_both_refuse_it_backwards() -> None:
    assert cleaned("start=2020-01-01&end=2025-01-01")["period"]
    assert errors("start=2020-01-01&end=2025-01-01", whole_days=True) == {
        "start": ["Report on at most 400 days at a time."]
    }
    assert errors("start=2025-02-01&end=2025-01-01") == {"start": ["The period must start before it ends."]}
    assert errors("start=2025-02-01&end=2025-01-01", whole_days=True) == {
        "start": ["The period must start before it ends."]
    }
    # One day is a period on the page (the day included), none in the API (end exclusive).
    assert errors("start=2025-01-01&end=2025-01-01")
    assert cleaned("start=2025-01-01&end=2025-01-01", whole_days=True)["period"]


@pytest.mark.parametrize("query", ["group_by=user", "team=not%20a%20slug", "start=yesterday", "end=9999-12-31"])
def test_a_bad_value_is_the_same_field_error_in_both_readings(query: str) -> None:
    assert set(errors(query)) == set(errors(query, whole_days=True)) == {query.split("=")[0]}


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "field"), [({"group_by": "user"}, "group_by"), ({"team": "a b"}, "team")])
def test_the_page_its_csv_and_the_api_refuse_a_bad_value_naming_the_field(
    lin: User, project: Project, query: dict[str, str], field: str
) -> None:
    api = api_for(lin).get("/api/v1/gpus/usage/", query)
    assert api.status_code == 400 and field in api.json()
    page = client_for(lin).get("/gpus/usage/", query)
    assert page.status_code == 400 and f'<p class="error">{field}: ' in page.content.decode()
    exported = client_for(lin).get("/gpus/usage.csv", query)
    assert exported.status_code == 400 and f"{field}: " in exported.content.decode()

"""Forms of the GPU pages (the services validate again: forms only shape input)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from apps.gpus.models import IdlePolicy
from apps.gpus.usage import GROUPS, Period


class IdlePolicyForm(forms.Form):
    threshold_percent = forms.FloatField(min_value=0, max_value=100, label="Idle below (% utilization)")
    window_minutes = forms.IntegerField(min_value=5, max_value=7 * 24 * 60, label="for at least (minutes)")
    notify = forms.BooleanField(required=False, label="Tell the launch's owner")
    reclaim = forms.BooleanField(required=False, label="Cancel the launch after the grace period")
    grace_minutes = forms.IntegerField(
        min_value=0, max_value=7 * 24 * 60, label="Grace period after the notice (minutes)"
    )

    @classmethod
    def for_policy(cls, policy: IdlePolicy) -> IdlePolicyForm:
        return cls(initial=policy.as_audit())


class ExemptionForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    hours = forms.IntegerField(
        required=False, min_value=1, max_value=24 * 90, label="for (hours)", help_text="empty: until the launch ends"
    )

    def expires_at(self) -> datetime | None:
        hours = self.cleaned_data.get("hours")
        return timezone.now() + timedelta(hours=hours) if hours else None


class PriceForm(forms.Form):
    model = forms.CharField(max_length=120, label="GPU model")
    price = forms.DecimalField(
        required=False, min_value=0, max_digits=10, decimal_places=4, label="price per GPU-hour (empty: remove)"
    )


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class UsageForm(forms.Form):
    """The report's period (whole days, the end day included) and grouping."""

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    group_by = forms.ChoiceField(choices=[(g, g) for g in GROUPS], required=False)
    team = forms.SlugField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        today = timezone.localdate()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            self.add_error("start", "The period starts after it ends.")
        elif (end - start).days > 400:
            self.add_error("start", "Report on at most 400 days at a time.")
        data["start"], data["end"] = start, end
        data["group_by"] = data.get("group_by") or "project"
        return data

    def period(self) -> Period:
        data = self.cleaned_data
        return Period.of(_day_start(data["start"]), _day_start(data["end"] + timedelta(days=1)))


def last_month() -> tuple[date, date]:
    first_of_this = timezone.localdate().replace(day=1)
    last_day = first_of_this - timedelta(days=1)
    return last_day.replace(day=1), last_day

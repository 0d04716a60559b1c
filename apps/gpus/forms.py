"""Forms of the GPU pages (the services validate again: forms only shape input)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django import forms
from django.utils import timezone

from apps.gpus.models import IdlePolicy


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
    product = forms.CharField(max_length=120, label="GPU product")
    price = forms.DecimalField(
        required=False, min_value=0, max_digits=10, decimal_places=4, label="price per GPU-hour (empty: remove)"
    )


def last_month() -> tuple[date, date]:
    first_of_this = timezone.localdate().replace(day=1)
    last_day = first_of_this - timedelta(days=1)
    return last_day.replace(day=1), last_day
